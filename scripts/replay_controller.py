#!/usr/bin/env python
"""Offline replay: how much can prompt-lookup drafting gain on a cost curve, and how much does the controller get?

1. Collect (once, cached in --cache): greedy outputs of the Spec-Bench dev prompts (first turn,
   <= 128 tokens) and, at every output position, the n-gram drafter's continuation (16 tokens).
2. Replay each cost curve T(k) without running the model: an iteration at position t drafting
   gamma tokens costs T(gamma + 1) plain steps and advances by (accepted + 1); a plain step costs 1.
   * clairvoyant: the draft length chosen knowing how many tokens will be accepted (dynamic
     programming over positions): the bound for this drafter on this curve;
   * controller: `verispec.engine.controller.Controller`, learning online as in the engine.
   Speedup = tokens / cost, decode only (no prefill, no overheads).

Usage: PYTHONPATH=src python scripts/replay_controller.py [--per-category N] [--cache FILE]
The T(k) rows below were measured with `python scripts/bench_tk.py --threads 2` (docs/speed.md).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from verispec.engine.controller import Controller, CostCurve  # noqa: E402

CURVES = {  # T(1..16), 2 threads, 2-core AMD EPYC
    "q4_1": [1, 2.00, 2.43, 2.85, 3.4, 4.00, 4.2, 4.47, 4.9, 5.3, 5.7, 6.09, 6.5, 6.9, 7.2, 7.55, 7.9],
    "f16": [1, 1.42, 1.52, 1.68, 1.8, 1.87, 2.2, 2.63, 2.8, 2.95, 3.05, 3.13, 3.18, 3.22, 3.26, 3.30, 3.4],
    "bf16": [1, 1.26, 1.39, 1.57, 1.65, 1.72, 1.9, 2.07, 2.17, 2.27, 2.37, 2.47, 2.55, 2.62, 2.67, 2.72, 2.8],
}


def collect(path: str, per_category: int | None) -> list[dict]:
    """Greedy outputs and the n-gram continuation at every position (cached as JSON)."""
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    from tqdm import tqdm

    from verispec.bench.datasets import load_dataset
    from verispec.draft.ngram import NGramDrafter
    from verispec.engine.build import EngineConfig, build_engine
    from verispec.sampling import SamplingParams

    eng = build_engine(EngineConfig(drafter="none", n_ctx=4096))
    rows = []
    for r in tqdm(load_dataset("spec-bench", per_category=per_category), desc="collect"):
        msgs = [{"role": "user", "content": r["prompt"]}]
        ids = eng.encode(msgs, True)
        toks = eng.generate(msgs, SamplingParams(0.0), 128).tokens
        d = NGramDrafter()
        prof = []
        for t in range(len(toks)):
            conts, m = d._continuations(d._sync(ids + toks[:t]), 16, 1)
            prof.append((m, list(conts[0]) if conts else []))
        rows.append({"category": r["category"], "tokens": toks, "drafts": prof})
    with open(path, "w") as f:
        json.dump(rows, f)
    return rows


def accepted(draft: list[int], tokens: list[int], t: int) -> int:
    a = 0
    while a < len(draft) and t + a < len(tokens) and draft[a] == tokens[t + a]:
        a += 1
    return a


def clairvoyant(row: dict, T: list[float], gmax: int) -> float:
    toks, prof = row["tokens"], row["drafts"]
    n = len(toks)
    best = [0.0] * (n + 1)
    for t in range(n - 1, -1, -1):
        m, draft = prof[t]
        a = accepted(draft, toks, t)
        best[t] = 1 + best[t + 1]
        for g in range(1, min(gmax, len(draft), n - t - 1) + 1):
            best[t] = min(best[t], T[g] + best[min(n, t + min(a, g) + 1)])
    return best[0]


def controlled(row: dict, ctl: Controller) -> float:
    toks, prof = row["tokens"], row["drafts"]
    n, t, cost = len(toks), 0, 0.0
    while t < n:
        m, draft = prof[t]
        bucket = (False, min(m, 8))
        g = ctl.choose(bucket, min(len(draft), n - t - 1)) if draft else 0
        if g <= 0:
            cost, t = cost + 1, t + 1
            continue
        a = accepted(draft[:g], toks, t)
        cost, t = cost + ctl.curve(g + 1), t + a + 1
        ctl.update(bucket, min(g, a + 1), a)
    return cost


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-category", type=int, default=None, help="prompts per category (default: all 240)")
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/verispec/replay-greedy.json"))
    ap.add_argument("--max-gamma", type=int, default=16)
    args = ap.parse_args(argv)
    rows = collect(args.cache, args.per_category)
    print(f"decode-only speedup, {len(rows)} prompts: clairvoyant draft length / the controller")
    for fmt, T in CURVES.items():
        agg: dict = defaultdict(lambda: [0, 0.0, 0.0])
        curve = CostCurve(T, 1.0)
        for row in rows:
            for cat in (row["category"], "ALL"):
                agg[cat][0] += len(row["tokens"])
            o = clairvoyant(row, T, args.max_gamma)
            c = controlled(row, Controller(curve, max_gamma=args.max_gamma))  # a fresh one per prompt
            for cat in (row["category"], "ALL"):
                agg[cat][1] += o
                agg[cat][2] += c
        cells = " ".join(f"{k}: {v[0] / v[1]:.2f}/{v[0] / v[2]:.2f}" for k, v in sorted(agg.items()))
        print(f"{fmt:5s} {cells}")


if __name__ == "__main__":
    main()
