"""The benchmark loop: every configuration on the same prompts, in one process, interleaved.

For prompt i the configurations run in the order of row i of a Williams design (`design.run_order`): each
runs in each place equally often, so slow drift of the machine (thermal state, other processes) hits
all of them alike instead of the ones that ran last, and each follows each other one equally often,
so what one leaves behind (a cache, freed memory) does not always land on the same successor.
Every configuration gets the same seed for the same prompt and sample (seed + i + s * len(rows) for
sample s of prompt i). With several samples every prompt runs once before any runs again: a prompt run
twice in a row would let llama-cpp-python take its whole prefill from its cache.

Robust by design:
* a configuration that fails to load is reported (``errors``) and left out; the rest run;
* a failing (configuration, prompt) is reported and the loop goes on;
* Ctrl-C stops the loop: what was measured so far is returned with ``interrupted = True``;
* `on_progress(raw)` is called after every prompt, so the caller can save partial results.
"""
from __future__ import annotations

import datetime
import os
import platform
import time
import traceback
from collections.abc import Callable

from tqdm import tqdm

from ..backends.base import cpu_name
from ..sampling import SamplingParams
from .configs import Runner, Settings, build_runner
from .design import run_order

WARMUP_PROMPT = "Say hello."


def machine() -> dict:
    """What the numbers were measured on."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "gpu": gpu, "platform": platform.platform(),
            "python": platform.python_version(), "load_avg_start": os.getloadavg()[0]}


def _error(config: str, prompt: str | None, exc: BaseException) -> dict:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f"{tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
    return {"config": config, "prompt": prompt, "error": f"{type(exc).__name__}: {exc}", "where": where}


def run_bench(rows: list[dict], names: list[str], settings: Settings, params: SamplingParams,
              max_tokens: int, seed: int = 0, progress: bool = True, warmup: bool = True,
              on_progress: Callable[[dict], None] | None = None,
              build: Callable[[str, Settings], Runner] = build_runner, samples: int = 1) -> dict:
    """Run every configuration in `names` on every row, `samples` times; returns the raw results (see module doc).

    rows: ``{id, category, prompt}`` (datasets.load_dataset); names: configs.parse_name grammar.
    Returns ``{"meta", "configs": {name: fields}, "results": [...], "errors": [...], "interrupted"}``
    with one result ``{config, id, category, seed, tokens, seconds, prefill, stats, gap}`` per successful run.
    """
    if not rows:
        raise ValueError("no prompts to run")
    if not names:
        raise ValueError("no configurations to run")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive int, got {max_tokens!r}")
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive int, got {samples!r}")
    raw = {"meta": {"machine": machine(), "started": datetime.datetime.now().isoformat(timespec="seconds"),
                    "params": vars(params) if hasattr(params, "__dict__") else str(params),
                    "max_tokens": max_tokens, "seed": seed, "samples": samples, "prompts": len(rows),
                    "settings": vars(settings)},
           "configs": {}, "results": [], "errors": [], "interrupted": False}
    runners: dict[str, Runner] = {}
    try:
        for name in tqdm(names, desc="loading", disable=not progress, leave=False):
            try:
                runners[name] = build(name, settings)
                raw["configs"][name] = {"family": runners[name].family, "system": runners[name].system,
                                        **runners[name].meta}
            except Exception as e:  # noqa: BLE001 - reported, the other configurations go on
                raw["errors"].append(_error(name, None, e))
        if warmup:  # first-call allocations and lazy loads happen outside the measurements
            for name, r in list(runners.items()):
                try:
                    r.run(WARMUP_PROMPT, params, 4, seed)
                except Exception as e:  # noqa: BLE001
                    raw["errors"].append(_error(name, "warmup", e))
        order = list(runners)
        bar = tqdm(total=len(rows) * samples * len(order), desc="bench", disable=not progress)
        for j in range(len(rows) * samples):  # sample s of prompt i is run j = s * len(rows) + i
            row, run_seed = rows[j % len(rows)], seed + j
            for name in run_order(order, j):
                bar.set_postfix_str(f"{row['category']} | {name}", refresh=False)
                try:
                    out = runners[name].run(row["prompt"], params, max_tokens, run_seed)
                    raw["results"].append({"config": name, "id": row["id"], "category": row["category"],
                                           "seed": run_seed, "tokens": out.tokens, "seconds": out.seconds,
                                           "prefill": out.prefill, "stats": out.stats, "gap": out.gap})
                except Exception as e:  # noqa: BLE001
                    raw["errors"].append(_error(name, row["id"], e))
                bar.update(1)
            if on_progress is not None:
                on_progress(raw)
        bar.close()
    except KeyboardInterrupt:
        raw["interrupted"] = True
    finally:
        for r in runners.values():
            try:
                r.close()
            except Exception:  # noqa: BLE001, S110 - closing is best effort
                pass
        raw["meta"]["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        raw["meta"]["machine"]["load_avg_end"] = os.getloadavg()[0]
        raw["meta"]["wall_s"] = round(time.time() - _start(raw), 1)
    return raw


def _start(raw: dict) -> float:
    return datetime.datetime.fromisoformat(raw["meta"]["started"]).timestamp()
