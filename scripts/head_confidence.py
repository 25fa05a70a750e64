#!/usr/bin/env python
"""A/B of the head drafter's shapes on the torch backend: chains cut by a confidence threshold
(`HeadDrafter(confidence=...)`) and value trees (`HeadDrafter(tree=TreeShape(nodes=...))`); with --heads,
head files against each other at the default shape.

One process, one engine per configuration, in a balanced order per prompt (`bench.design.run_order`)
so that machine drift and carry-over hit all alike: plain decoding, then `head` and `ngram+head` with
chains of the controller's length (threshold off), with each threshold given, and with a tree of each
node cap given.
Spec-Bench dev, first turn, temperature 0.

Usage: PYTHONPATH=src python scripts/head_confidence.py [--thresholds 0.1,0.2] [--trees 6,10] [--per-category 1]
       PYTHONPATH=src python scripts/head_confidence.py --heads A.pt,B.pt (head and ngram+head with each file;
           --drafters ngram+head for that one alone; intervals paired over the prompts)
       PYTHONPATH=src python scripts/head_confidence.py --quant (head and ngram+head, int4 / int8 / bfloat16 weights)
       PYTHONPATH=src python scripts/head_confidence.py --copy 0,4,6,8 --per-category 2 (ngram+head's copy branch
           of each length, 0 = none; docs/speed.md §11)
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from verispec.bench.datasets import load_dataset  # noqa: E402
from verispec.bench.intervals import format_interval, speedup_interval  # noqa: E402
from verispec.bench.design import run_order  # noqa: E402
from verispec.cli_args import HEAD_DRAFTERS  # noqa: E402
from verispec.engine.build import EngineConfig, build_engine  # noqa: E402
from verispec.sampling import SamplingParams  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--thresholds", default="0.1,0.2")
    ap.add_argument("--trees", default="", help="node caps of value trees, e.g. 6,10 (none by default)")
    ap.add_argument("--per-category", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--heads", default="", help="head files to compare at the default shape (no thresholds, trees)")
    ap.add_argument("--drafters", default="head,ngram+head",
                    help="with --heads: the drafters to run each head file in")
    ap.add_argument("--quant", action="store_true", help="the head's int4 and int8 weights against bfloat16 ones, at the "
                    "default shape (no thresholds, trees)")
    ap.add_argument("--copy", default="", help="ngram+head with a copy branch of each length given (0: none), at the "
                    "default shape (no thresholds, trees)")
    args = ap.parse_args(argv)
    bad = [d for d in args.drafters.split(",") if d and d not in HEAD_DRAFTERS]
    if bad:
        ap.error(f"--drafters takes {', '.join(HEAD_DRAFTERS)}, got {', '.join(bad)}")
    missing = [h for h in args.heads.split(",") if h and not os.path.isfile(h)]
    if missing:
        ap.error(f"no such head file: {', '.join(missing)}")
    engines = {"plain": build_engine(EngineConfig(backend="torch", drafter="none", n_threads=args.threads))}
    for path in [h for h in args.heads.split(",") if h]:
        for drafter in [d for d in args.drafters.split(",") if d]:
            engines[f"{drafter}, {os.path.basename(path)}"] = build_engine(
                EngineConfig(backend="torch", drafter=drafter, n_threads=args.threads, draft_head=path))
    for drafter in ("head", "ngram+head") if args.quant else ():
        for quant in ("int4", "int8", "none"):
            engines[f"{drafter}, {quant}"] = build_engine(EngineConfig(backend="torch", drafter=drafter,
                                                                       n_threads=args.threads, head_quant=quant))
    for n in [int(x) for x in args.copy.split(",") if x]:
        engines[f"ngram+head, copy branch {n}"] = build_engine(EngineConfig(backend="torch", drafter="ngram+head",
                                                                          n_threads=args.threads, copy_branch=n))
    for drafter in ("head", "ngram+head") if not (args.heads or args.quant or args.copy) else ():
        for c in [None] + [float(x) for x in args.thresholds.split(",") if x]:
            eng = build_engine(EngineConfig(backend="torch", drafter=drafter, n_threads=args.threads, head_tree=0))
            (eng.drafter.fallback if drafter == "ngram+head" else eng.drafter).confidence = c
            engines[f"{drafter}, confidence {c}"] = eng
        for nodes in [int(x) for x in args.trees.split(",") if x]:
            engines[f"{drafter}, tree {nodes}"] = build_engine(EngineConfig(backend="torch", drafter=drafter,
                                                                            n_threads=args.threads, head_tree=nodes))
    rows = load_dataset("spec-bench", per_category=args.per_category)
    names, params = list(engines), SamplingParams(0.0)
    agg = defaultdict(lambda: [0, 0.0, 0, 0, 0, 0.0])  # tokens, seconds, target calls, drafts, draft tokens, drafting s
    per = defaultdict(dict)  # configuration -> {prompt index: (tokens, seconds)}, for paired intervals
    for i, row in enumerate(rows):
        for name in run_order(names, i):
            torch.set_num_threads(args.threads)
            t0 = time.perf_counter()
            g = engines[name].generate([{"role": "user", "content": row["prompt"]}], params, args.max_tokens)
            a, seconds = agg[name], time.perf_counter() - t0
            a[0], a[1] = a[0] + g.stats.emitted, a[1] + seconds
            per[name][i] = (g.stats.emitted, seconds)
            a[2], a[3], a[4] = a[2] + g.stats.target_calls, a[3] + g.stats.drafts, a[4] + g.stats.draft_tokens
            a[5] += g.stats.time_draft
        print(f"{i + 1}/{len(rows)} {row['category']}", file=sys.stderr, flush=True)
    base = agg["plain"][0] / agg["plain"][1]
    first = names[1] if len(names) > 1 else "plain"  # the first configuration after plain decoding
    print(f"| configuration | tok/s | vs plain | vs {first} | MAL | drafts per target call | draft tokens per call | "
          "drafting ms per call |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, (n, s, calls, drafts, nodes, drafting) in agg.items():
        vs_plain, vs_first = (format_interval(speedup_interval(per[name], per[b])) for b in ("plain", first))
        print(f"| {name} | {n / s:.1f} | {n / s / base:.3f}{vs_plain} | {n / s * agg[first][1] / agg[first][0]:.3f}"
              f"{vs_first} | {n / calls:.2f} | {drafts / calls:.2f} | {nodes / calls:.2f} "
              f"| {1e3 * drafting / calls:.2f} |")
    print("(low-high): a 90% interval, a paired bootstrap over the prompts")


if __name__ == "__main__":
    main()
