#!/usr/bin/env python
"""Is the head calibrated in its value trees? Expected against accepted draft tokens, by category.

A value tree's expected accepted length is the sum of its nodes' values (products of the head's
probabilities along their paths, `draft/value_tree.py`); if the head is calibrated, that is how
many of its tokens greedy verification accepts on average. This runs `--drafter head` on the
torch backend over Spec-Bench dev (first turn, temperature 0) and, for every verified tree, keeps
(expected, accepted). A ratio below 1 means the head is over-confident there (its trees are
larger than they are worth), above 1 under-confident.

Usage: PYTHONPATH=src python scripts/tree_calibration.py [--per-category 1] [--draft-head FILE]
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from verispec.bench.datasets import load_dataset  # noqa: E402
from verispec.engine.build import EngineConfig, build_engine  # noqa: E402
from verispec.sampling import SamplingParams  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-category", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--draft-head", default=None, help="a head file (default: the shipped one)")
    args = ap.parse_args(argv)
    eng = build_engine(EngineConfig(backend="torch", drafter="head", draft_head=args.draft_head,
                                    n_threads=args.threads))
    drafter, pairs = eng.drafter, []
    propose = drafter.propose

    def fresh_propose(req, budget):
        drafter.expected = None  # set again only when a value tree is drafted
        return propose(req, budget)

    def observe(req, tree, result):
        if drafter.expected is not None:
            pairs.append((drafter.expected, int(result.num_accepted[0])))

    drafter.propose, drafter.observe = fresh_propose, observe
    by_cat = defaultdict(lambda: [0, 0.0, 0])  # trees, expected, accepted
    for i, row in enumerate(load_dataset("spec-bench", per_category=args.per_category)):
        torch.set_num_threads(args.threads)
        pairs.clear()
        eng.generate([{"role": "user", "content": row["prompt"]}], SamplingParams(0.0), args.max_tokens)
        for cat in (row["category"], "ALL"):
            c = by_cat[cat]
            c[0], c[1], c[2] = c[0] + len(pairs), c[1] + sum(e for e, _ in pairs), c[2] + sum(a for _, a in pairs)
        print(f"{i + 1} {row['category']}", file=sys.stderr, flush=True)
    print("| category | trees | expected accepted | accepted | accepted / expected |\n|---|---:|---:|---:|---:|")
    for cat in sorted(by_cat, key=lambda c: (c == "ALL", c)):
        n, exp, acc = by_cat[cat]
        print(f"| {cat} | {n} | {exp / max(n, 1):.2f} | {acc / max(n, 1):.2f} | {acc / exp if exp else 0:.2f} |")


if __name__ == "__main__":
    main()
