"""End-to-end speed on the Spec-Bench dev split: verispec vs plain decoding, in the same process.

For every prompt (first turn, chat template), interleaved so machine noise hits every
configuration alike (`design.run_order`):
  * llama-cpp-python's own `create_chat_completion` on the same GGUF (what a CPU user runs),
  * verispec plain decoding on the same backend (speculation off),
  * verispec speculative decoding (drafter + verifier, the controller choosing gamma).
tokens/s per category is total completion tokens / total seconds (prefill included); the
"decode" rates count only what follows the first streamed token (n - 1 tokens over the time after
it), the same way for every configuration; the "matched" ones time every run at its prompt's mean
length (`intervals.matched_lengths`: above temperature 0 the configurations draw texts of different
lengths). At temperature 0 "same text" counts the runs in which verispec wrote each baseline's text: greedy
texts part where two roundings break a near-tie apart. `--samples N` runs every prompt N times, seeds
seed.. seed + N - 1. Speedups are ratios in the same run. `--q4-reference` adds llama-cpp-python on the
shipped Q4_1 file (verispec's default is a BF16 copy, see backends/registry.py), the absolute speed a user
gets without verispec. `verispec bench run` (runner.py) generalises this to any list of configurations.
Usage: python -m verispec.bench.speed --temperature 0 --max-tokens 128 [--limit N] [--samples N]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

from tqdm import tqdm

from ..cli_args import MAX_GAMMA, add_prefill_arg, add_sampling_args
from .datasets import DEV, load_dataset
from .intervals import format_interval, matched_lengths, rate, speedup_interval
from .design import run_order


def _timed(chunks) -> tuple[int, float, float]:
    """Consume a stream; (chunks seen, seconds to the first chunk, seconds in all)."""
    t0 = time.perf_counter()
    first, n = None, 0
    for _ in chunks:
        n += 1
        if first is None:
            first = time.perf_counter() - t0
    total = time.perf_counter() - t0
    return n, total if first is None else first, total


def run(args) -> dict:
    """Interleaved runs; per category and config: tokens, seconds, seconds to the first token."""
    from llama_cpp import Llama

    from ..backends import default_model_path
    from ..engine.build import EngineConfig, build_engine
    from ..sampling import SamplingParams

    model = args.model or default_model_path(args.model_format)
    params = SamplingParams.from_args(args)  # validates
    runtime = dict(model=model, n_threads=args.threads, n_ctx=args.n_ctx, torch_prefill=args.torch_prefill,
                   flash_attn={"auto": None, "on": True, "off": False}[args.flash_attn])
    cfg = EngineConfig(drafter=args.drafter, verifier=args.verifier, k=args.k, gamma=args.gamma,
                       max_gamma=args.max_gamma, **runtime)
    engines = {"spec": build_engine(cfg), "plain": build_engine(EngineConfig(drafter="none", **runtime))}
    from ..backends.base import usable_cpus

    threads = args.threads or usable_cpus()  # llama-cpp-python's own default is half the cores
    thr = {"n_threads": threads, "n_threads_batch": threads}
    llamas = {"llama-cpp": Llama(model_path=model, n_ctx=args.n_ctx, verbose=False, **thr)}
    if args.q4_reference:  # the shipped file, plain: what a user runs without verispec
        llamas["llama-cpp q4_1"] = Llama(model_path=default_model_path("q4_1"), n_ctx=args.n_ctx, verbose=False,
                                         **thr)
    rows = load_dataset(args.data, args.limit, args.per_category)
    names = list(llamas) + list(engines)
    runs = []  # one record a prompt, seed and configuration: the figures the table is made of (`summarize`)
    # every prompt once, then again with the next seed: never one prompt twice in a row, whose whole prefill
    # llama-cpp-python would take from its cache (it keeps the previous prompt's; verispec keeps the template's)
    work = [(i, s) for s in range(args.samples) for i in range(len(rows))]
    for j, (i, s) in enumerate(tqdm(work, desc="speed", disable=args.quiet)):
        row, seed = rows[i], args.seed + s
        msgs = [{"role": "user", "content": row["prompt"]}]
        for name in run_order(names, j):  # drift and carry-over spread over the configurations
            if name in llamas:
                usage: dict = {}

                def chunks(llm=llamas[name]):
                    for c in llm.create_chat_completion(msgs, max_tokens=args.max_tokens, stream=True,
                                                        temperature=args.temperature, top_k=args.top_k or 0,
                                                        top_p=args.top_p, min_p=args.min_p, repeat_penalty=1.0,
                                                        seed=seed):  # its default samplers off: same law
                        piece = c["choices"][0]["delta"].get("content")
                        if piece:
                            usage["n"] = usage.get("n", 0) + 1  # one chunk per token
                            usage["text"] = usage.get("text", "") + piece
                            yield c
                _, first, total = _timed(chunks())
                n, text = usage.get("n", 0), usage.get("text", "")
            else:
                gen = engines[name].stream(msgs, params, args.max_tokens, seed=seed)
                holder: dict = {}

                def chunks(gen=gen, holder=holder):
                    try:
                        while True:
                            yield next(gen)
                    except StopIteration as fin:
                        holder["g"] = fin.value
                _, first, total = _timed(chunks())
                st = holder["g"].stats
                n, text = st.emitted, holder["g"].text
            run = {"prompt": row["id"], "category": row["category"], "config": name, "seed": seed,
                   "tokens": n, "seconds": total, "first": first, "text": text}
            if name == "spec":  # tokens generated (the end-of-sequence one counted) and target passes: MAL
                run.update(generated=st.emitted + st.eos, target_calls=st.target_calls)
            runs.append(run)
    return {"config": vars(args), "table": summarize(runs), "runs": runs}


def summarize(runs: list[dict]) -> dict:
    """category (and ALL) -> the row of the table: tok/s of every configuration, end to end and after the first
    token ("decode": n - 1 tokens over the time after it), verispec's speedups over each baseline raw, decode and at
    matched lengths (`intervals.matched_lengths`), with 90% intervals over the prompts (a prompt's samples pooled),
    and the mean acceptance length; where the runs keep their texts, how many of spec's (prompt, seed) runs wrote
    each baseline's text ("same text": (equal, compared); at temperature 0 a difference means the two rounded a
    near-tie apart, and the row compares different texts)."""
    agg: dict = defaultdict(lambda: defaultdict(lambda: [0, 0.0, 0, 0.0]))  # tokens, seconds; after the first
    per: dict = defaultdict(lambda: defaultdict(dict))  # category -> config -> {prompt: (tokens, seconds)}
    accept: dict = defaultdict(lambda: [0, 0])  # category -> [generated, target calls] of spec
    texts: dict = defaultdict(lambda: defaultdict(dict))  # category -> config -> {(prompt, seed): text}
    for r in runs:
        for cat in (r["category"], "ALL"):
            a = agg[cat][r["config"]]
            a[0], a[1] = a[0] + r["tokens"], a[1] + r["seconds"]
            a[2], a[3] = a[2] + max(r["tokens"] - 1, 0), a[3] + r["seconds"] - r["first"]
            m, sec = per[cat][r["config"]].get(r["prompt"], (0, 0.0))
            per[cat][r["config"]][r["prompt"]] = (m + r["tokens"], sec + r["seconds"])
            if "text" in r:
                texts[cat][r["config"]][(r["prompt"], r["seed"])] = r["text"]
            if "target_calls" in r:
                accept[cat][0] += r["generated"]
                accept[cat][1] += r["target_calls"]
    matched = matched_lengths(runs)
    table = {}
    for cat, d in agg.items():
        tps = {k: v[0] / v[1] if v[1] else 0.0 for k, v in d.items()}
        dec = {k: v[2] / v[3] if v[3] else 0.0 for k, v in d.items()}
        em, calls = accept[cat]
        row = {**{f"{k} tok/s": v for k, v in tps.items()}, **{f"{k} decode tok/s": v for k, v in dec.items()}}
        for base in ("llama-cpp", "plain", "llama-cpp q4_1"):
            if tps.get(base):
                row[f"spec / {base}"] = tps["spec"] / tps[base]
                row[f"spec / {base} (decode)"] = dec["spec"] / dec[base]
                row[f"spec / {base} interval"] = speedup_interval(per[cat]["spec"], per[cat][base])
                m = matched[cat]
                row[f"spec / {base} (matched)"] = rate(m["spec"]) / rate(m[base])
                row[f"spec / {base} (matched) interval"] = speedup_interval(m["spec"], m[base])
        row["mean acceptance length"] = em / calls if calls else 0.0
        for base in ("llama-cpp", "plain"):
            if base in texts[cat]:
                pairs = [(t, texts[cat][base].get(key)) for key, t in texts[cat]["spec"].items()]
                row[f"spec / {base} same text"] = (sum(t == b for t, b in pairs), len(pairs))
        table[cat] = row
    return table


def format_table(res: dict) -> str:
    cols = ["llama-cpp tok/s", "spec tok/s", "spec / llama-cpp", "spec / llama-cpp (decode)",
            "spec / llama-cpp (matched)", "spec / plain", "spec / plain (decode)", "spec / plain (matched)",
            "spec / llama-cpp q4_1", "mean acceptance length"]
    if res["config"].get("temperature") == 0:  # above it every configuration draws its own text
        cols += ["spec / llama-cpp same text", "spec / plain same text"]
    cols = [c for c in cols if any(c in r for r in res["table"].values())]
    lines = ["| category | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    cats = sorted(k for k in res["table"] if k != "ALL") + ["ALL"]
    for c in cats:
        r = res["table"][c]
        lines.append(f"| {c} | " + " | ".join(_cell(r, k) for k in cols) + " |")
    notes = ("(low-high): the 90% interval of a speedup, a paired bootstrap over the category's prompts "
             "(bench/intervals.py). (matched): every run timed at the mean length of its prompt and seed's runs, "
             "from its own first-token time and step rate (`intervals.matched_lengths`); above temperature 0 the "
             "configurations' texts differ in length.")
    if "spec / llama-cpp same text" in cols:
        notes += (" same text: runs (prompt, seed) in which verispec wrote the baseline's text to the character, of "
                  "those compared; where it did not, greedy decoding parted at a near-tie that the two round apart, "
                  "and the row's speedups compare different texts.")
    return "\n".join(lines + ["", notes])


def _cell(row: dict, key: str) -> str:
    if key.endswith("same text"):
        same, n = row.get(key, (0, 0))
        return f"{same}/{n}"
    return f"{row.get(key, 0):.2f}" + format_interval(row.get(f"{key} interval"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="verispec bench speed", description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DEV))
    ap.add_argument("--model", default=None)
    ap.add_argument("--model-format", default=None, choices=["bf16", "f16", "q4_1"],
                    help="format of the embedded model (default bf16)")
    ap.add_argument("--q4-reference", action="store_true",
                    help="also time llama-cpp-python on the shipped Q4_1 file (absolute reference)")
    ap.add_argument("--drafter", default="ngram")
    ap.add_argument("--verifier", default="auto")
    ap.add_argument("-k", type=int, default=1)
    ap.add_argument("--gamma", type=int, default=None)
    ap.add_argument("--max-gamma", type=int, default=MAX_GAMMA)
    add_sampling_args(ap, temperature=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=1, help="runs of every prompt and configuration, seeds seed, "
                    "seed + 1, ...: above temperature 0 each configuration draws its own texts, whose lengths "
                    "move tokens/s (a short answer is mostly prefill); more samples average that out")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--per-category", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--n-ctx", type=int, default=4096)
    add_prefill_arg(ap)
    ap.add_argument("--flash-attn", default="auto", choices=["auto", "on", "off"],
                    help="verispec's llama.cpp flash attention (auto: the cheaper path on this CPU, measured once; "
                    "where that is on, off for the prompts torch prefills)")
    ap.add_argument("--out", default=None, help="write the JSON here")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    if args.samples < 1:
        ap.error(f"--samples must be >= 1, got {args.samples}")
    res = run(args)
    print(format_table(res))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
