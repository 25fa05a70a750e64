#!/usr/bin/env python
"""Offline replay: how much can prompt-lookup drafting gain on a cost curve, and how much does the controller get?

1. Collect (once, cached in --cache): greedy outputs of the Spec-Bench dev prompts (first turn,
   <= 128 tokens) and, at every output position, the n-gram drafter's continuation (16 tokens).
2. Replay each cost curve T(k) without running the model: an iteration at position t drafting
   gamma tokens costs T(gamma + 1) plain steps and advances by (accepted + 1); a plain step costs 1.
   * clairvoyant: the draft length chosen knowing how many tokens will be accepted (dynamic
     programming over positions): the bound for this drafter on this curve;
   * hindsight: one draft length per match-length bucket (the controller's confidence feature),
     the best per category on these very outputs (coordinate search): what a controller that knew
     each bucket's acceptance in advance could get from that feature alone;
   * controller: `verispec.engine.controller.Controller`, learning online as in the engine: fresh
     for every prompt, and pooled (one for all prompts in order, as an engine keeps its counts).
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
    # the engine's cached curve on the AVX2 EPYC without native bfloat16 (docs/speed.md §27), extended linearly
    "bf16_avx2": [1, 1.47, 1.58, 1.70, 1.81, 1.94, 2.08, 2.17, 2.30, 2.56, 2.67, 2.74, 2.91, 3.08, 3.25, 3.42, 3.59],
    # the BF16 copy without flash attention on the Zen 4 EPYC at 200 tokens (docs/speed.md §34), extended linearly
    "bf16_zen4": [1, 1.76, 1.90, 2.04, 2.20, 2.31, 2.37, 2.41, 2.51, 2.61, 2.71, 2.81, 2.91, 3.01, 3.11, 3.21, 3.31],
}


def greedy_outputs(per_category: int | None = None):
    """Yields (dataset row, prompt ids, greedy output of <= 128 tokens) for the Spec-Bench dev prompts, on the
    embedded default (llama.cpp backend)."""
    from tqdm import tqdm

    from verispec.bench.datasets import load_dataset
    from verispec.engine.build import EngineConfig, build_engine
    from verispec.sampling import SamplingParams

    eng = build_engine(EngineConfig(drafter="none", n_ctx=4096))
    for r in tqdm(load_dataset("spec-bench", per_category=per_category), desc="collect"):
        msgs = [{"role": "user", "content": r["prompt"]}]
        yield r, eng.encode(msgs, True), list(eng.generate(msgs, SamplingParams(0.0), 128).tokens)


def collect(path: str, per_category: int | None) -> list[dict]:
    """Greedy outputs and the n-gram continuation at every position (cached as JSON)."""
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    from verispec.draft.ngram import NGramDrafter

    rows = []
    for r, ids, toks in greedy_outputs(per_category):
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


def walk(row: dict, price, choose, learn=None) -> float:
    """Cost of the row where a drafter with a proposal of match length m drafts choose(m, room) of its tokens
    (0: a plain step; room: what the proposal and the row leave) at price(gamma) plain steps and, with `learn`,
    learn(m, gamma, accepted) follows every draft."""
    toks, prof = row["tokens"], row["drafts"]
    n, t, cost = len(toks), 0, 0.0
    while t < n:
        m, draft = prof[t]
        g = choose(m, min(len(draft), n - t - 1)) if draft else 0
        if g <= 0:
            cost, t = cost + 1, t + 1
            continue
        a = accepted(draft[:g], toks, t)
        cost, t = cost + price(g), t + a + 1
        if learn is not None:
            learn(m, g, a)
    return cost


def fixed(row: dict, T: list[float], policy: dict[int, int]) -> float:
    """Cost of drafting policy[min(m, 8)] tokens (0: a plain step) wherever the drafter has a proposal."""
    return walk(row, T.__getitem__, lambda m, room: min(policy.get(min(m, 8), 0), room))


def hindsight(rows: list[dict], T: list[float], gmax: int) -> float:
    """The least cost of `fixed` over policies, by coordinate search (two sweeps over the 9 buckets)."""
    policy = dict.fromkeys(range(9), 0)
    best = sum(fixed(r, T, policy) for r in rows)
    for _ in range(2):
        for b in range(9):
            for g in range(gmax + 1):
                old, policy[b] = policy[b], g
                cost = sum(fixed(r, T, policy) for r in rows)
                if cost < best - 1e-9:
                    best = cost
                else:
                    policy[b] = old
    return best


def controlled(row: dict, ctl: Controller) -> float:
    """Cost of the row with `ctl` choosing every draft length and learning from every draft."""
    return walk(row, lambda g: ctl.curve(g + 1), lambda m, room: ctl.choose((False, min(m, 8)), room),
                lambda m, g, a: ctl.update((False, min(m, 8)), min(g, a + 1), a))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-category", type=int, default=None, help="prompts per category (default: all 240)")
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/verispec/replay-greedy.json"))
    ap.add_argument("--max-gamma", type=int, default=16)
    ap.add_argument("--curve", choices=sorted(CURVES), default=None, help="one cost curve (default: all)")
    args = ap.parse_args(argv)
    rows = collect(args.cache, args.per_category)
    print(f"decode-only speedup, {len(rows)} prompts: clairvoyant draft length / hindsight policy by match length / "
          "the controller fresh per prompt / pooled over the prompts")
    curves = {args.curve: CURVES[args.curve]} if args.curve else CURVES
    by_cat: dict = defaultdict(list)
    for row in rows:
        by_cat[row["category"]].append(row)
    for fmt, T in curves.items():
        agg: dict = defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0.0])
        curve = CostCurve(T, 1.0)
        pooled = Controller(curve, max_gamma=args.max_gamma)
        for row in rows:
            o = clairvoyant(row, T, args.max_gamma)
            c = controlled(row, Controller(curve, max_gamma=args.max_gamma))  # a fresh one per prompt
            p = controlled(row, pooled)
            for cat in (row["category"], "ALL"):
                a = agg[cat]
                a[0], a[1], a[3], a[4] = a[0] + len(row["tokens"]), a[1] + o, a[3] + c, a[4] + p
        for cat, part in by_cat.items():
            h = hindsight(part, T, args.max_gamma)
            agg[cat][2] += h
            agg["ALL"][2] += h
        print(fmt)
        for k, v in sorted(agg.items(), key=lambda kv: (kv[0] == "ALL", kv[0])):
            print(f"  {k:15s} " + " / ".join(f"{v[0] / c:.2f}" for c in v[1:]))


if __name__ == "__main__":
    main()
