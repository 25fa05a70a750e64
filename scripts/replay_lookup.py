#!/usr/bin/env python
"""Offline replay: which earlier occurrence should prompt lookup copy?

`NGramDrafter` copies what followed the most recent occurrence of the longest suffix n-gram (n <= 4). The
hindsight bound of docs/speed.md §28 (the best occurrence known in advance: summarization 1.82x decode-only
against 1.21x) suggested that ranking occurrences better might pay. This replays other rankings on the target's
greedy outputs, decode only, on one cost curve (`replay_controller.CURVES`), with the engine's controller
choosing every draft length (fresh per prompt, and pooled over the prompts), and the clairvoyant draft length
as the bound for each ranking:

  recent        the drafter as it is (`NGramDrafter._continuations`)
  longest<n>    among all occurrences of the last n tokens, the one whose match extends furthest backwards
                (up to 64 tokens; ties: the most recent), as a suffix tree would rank them
  vote<n>       the same, ties broken by the continuation's first token most often seen among them

1. Collect (once, cached in --cache): the prompt's token ids and the greedy output (<= 128 tokens) of every
   Spec-Bench dev prompt, on the embedded default (llama.cpp backend).
2. Replay every ranking on the categories asked for.

Usage: PYTHONPATH=src python scripts/replay_lookup.py [--categories summarization,rag] [--policies recent,longest2]
Result (docs/speed.md §30): no ranking moves the controller's speedup by more than 0.01.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from replay_controller import CURVES, clairvoyant, controlled, greedy_outputs  # noqa: E402

from verispec.draft.ngram import NGramDrafter  # noqa: E402
from verispec.engine.controller import Controller, CostCurve  # noqa: E402

MAX_MATCH = 64


def collect(path: str) -> list[dict]:
    """Prompt ids and greedy outputs of all dev prompts (`replay_controller.greedy_outputs`, cached as JSON)."""
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    rows = [{"category": r["category"], "ids": ids, "tokens": toks} for r, ids, toks in greedy_outputs()]
    with open(path, "w") as f:
        json.dump(rows, f)
    return rows


def match_lengths(arr: np.ndarray, starts: np.ndarray, n: int) -> np.ndarray:
    """For occurrences arr[i:i+n] == arr[L-n:] at `starts`: how far each match extends backwards (n..MAX_MATCH)."""
    L, m = arr.shape[0], np.full(starts.shape, n)
    alive = np.arange(starts.size)
    for o in range(n, MAX_MATCH):
        j = starts[alive] + n - o - 1  # the token before the match so far, per occurrence still extending
        keep = j >= 0
        alive = alive[keep][arr[j[keep]] == arr[L - o - 1]]
        if alive.size == 0:
            break
        m[alive] += 1
    return m


def longest(arr: np.ndarray, budget: int, n: int, vote: bool) -> tuple[int, list[int]]:
    if arr.shape[0] <= n:
        return 0, []
    starts = NGramDrafter._occurrences(arr, n)
    if starts.size == 0:
        return 0, []
    m = match_lengths(arr, starts, n)
    tied = starts[m == m.max()]
    if vote:
        firsts = arr[np.minimum(tied + n, arr.shape[0] - 1)]
        values, counts = np.unique(firsts, return_counts=True)
        tied = tied[firsts == values[counts.argmax()]]
    i = int(tied[-1])
    return int(m.max()), arr[i + n: i + n + budget].tolist()


def policy(name: str):
    if name == "recent":
        d = NGramDrafter()

        def recent(arr, budget):
            conts, m = d._continuations(arr, budget, 1)
            return m, list(conts[0]) if conts else []
        return recent
    for kind in ("longest", "vote"):
        if name.startswith(kind) and name[len(kind):].isdigit():
            n = int(name[len(kind):])
            return lambda arr, budget: longest(arr, budget, n, kind == "vote")
    raise SystemExit(f"unknown policy {name!r} (recent, longest<n>, vote<n>)")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/verispec/replay-greedy-ids.json"))
    ap.add_argument("--categories", default="", help="comma-separated (default: all)")
    ap.add_argument("--policies", default="recent,longest1,longest2,vote2,longest3")
    ap.add_argument("--curve", choices=sorted(CURVES), default="bf16_avx2")
    ap.add_argument("--max-gamma", type=int, default=12)
    args = ap.parse_args(argv)
    rows = collect(args.cache)
    if args.categories:
        wanted = set(args.categories.split(","))
        rows = [r for r in rows if r["category"] in wanted]
        if not rows:
            raise SystemExit(f"no prompts in categories {sorted(wanted)}")
    T = CURVES[args.curve]
    curve = CostCurve(T, 1.0)
    print(f"decode-only speedup on the {args.curve} curve, {len(rows)} prompts: clairvoyant draft length / the "
          "controller fresh per prompt / pooled; first-token hits where there is a draft")
    for name in args.policies.split(","):
        propose, pooled = policy(name), Controller(curve, max_gamma=args.max_gamma)
        agg: dict = defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0, 0])
        for r in rows:
            full = np.array(r["ids"] + r["tokens"], dtype=np.int64)
            drafts = [propose(full[: len(r["ids"]) + t], 16) for t in range(len(r["tokens"]))]
            row = {"tokens": r["tokens"], "drafts": drafts}
            costs = (clairvoyant(row, T, args.max_gamma), controlled(row, Controller(curve, max_gamma=args.max_gamma)),
                     controlled(row, pooled))
            hits = sum(1 for t, (_, d) in enumerate(drafts) if d and d[0] == r["tokens"][t])
            have = sum(1 for _, d in drafts if d)
            for key in (r["category"], "ALL"):
                a = agg[key]
                a[0] += len(r["tokens"])
                for i, c in enumerate(costs):
                    a[1 + i] += c
                a[4], a[5] = a[4] + hits, a[5] + have
        print(name)
        for key, a in sorted(agg.items(), key=lambda kv: (kv[0] == "ALL", kv[0])):
            print(f"  {key:15s} " + " / ".join(f"{a[0] / c:.2f}" for c in a[1:4]) + f"  hits {a[4] / max(a[5], 1):.2f}")


if __name__ == "__main__":
    main()
