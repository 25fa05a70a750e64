#!/usr/bin/env python
"""How often a draft head's chain agrees with the target's greedy continuation, and how well its
top-1 probability predicts that (calibration), on Spec-Bench dev or any prompt file.

For each prompt (first turn, chat template, last 1500 tokens) the torch target decodes greedily
(`--tokens` + `--depth` tokens); at each of the first `--tokens` positions every head drafts a
greedy chain of `--depth` from the target's real features, stopped at its first miss. Printed:
  * top-1 agreement at depth 1 per category, one column per head file;
  * for the first head: top-2 / top-4 agreement at depth 1, and agreement by the head's top-1
    probability (bins) at depths 1-3 -- a calibrated head is right about p of the time.

Usage: PYTHONPATH=src python scripts/head_probe.py [HEAD ...] [--per-category 2] [--data FILE]
(no HEAD: the shipped one). Synthetic prompts of the training kind, for comparison:
  PYTHONPATH=src python scripts/head_probe.py --synthetic 26
With --copy, agreement is also split by what prompt lookup would do at each position (the last two
tokens occur earlier and what followed is the target's token / is not / no earlier occurrence), on
the copy-heavy categories and two others (docs/speed.md §8):
  PYTHONPATH=src python scripts/head_probe.py --copy --per-category 3 --tokens 62 --depth 2
"""
from __future__ import annotations

import argparse
import os
import random
import sys
from collections import defaultdict

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from verispec.backends import load_backend  # noqa: E402
from verispec.bench.datasets import load_dataset  # noqa: E402
from verispec.draft.head import HeadDrafter  # noqa: E402
from verispec.draft.head_data import first_round  # noqa: E402
from verispec.draft.ngram import NGramDrafter  # noqa: E402

BINS = (0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 1.01)
COPY_CATEGORIES = ("summarization", "rag", "extraction", "writing", "coding")


LOOKUP = NGramDrafter(max_ngram=2, min_ngram=2)  # the most recent earlier occurrence of the last two tokens


def lookup_class(seq: list[int], y: int) -> str:
    """What prompt lookup (a 2-gram `NGramDrafter`) would draft after `seq` against the target's next token `y`."""
    conts, _ = LOOKUP._continuations(np.asarray(seq, dtype=np.int64), 1, 1)
    if not conts:
        return "no earlier occurrence"
    return "copy, right" if conts[0][0] == y else "copy, wrong"


def chain(drafter: HeadDrafter, context: list[int], truth: list[int]) -> list[tuple[float, bool, list[int]]]:
    """The head's greedy chain after `context`, up to its first miss against `truth`:
    [(top-1 probability, right?, top-4 ids)] per depth."""
    drafter._sync(context)
    f, P, out = drafter._last, len(context) - 1, []
    for d, y in enumerate(truth):
        z = drafter.head.logits(f).float().softmax(-1)
        top = drafter.head.vocab[z.topk(4).indices].tolist()
        out.append((float(z.max()), top[0] == y, top))
        if top[0] != y:
            break
        f = drafter.cache.step(torch.tensor([top[0]]), f[None], torch.tensor([P + 1 + d]))[-1]
    drafter.cache.len = P + 1 - drafter._start
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("heads", nargs="*", default=[None])
    ap.add_argument("--data", default="spec-bench")
    ap.add_argument("--per-category", type=int, default=2)
    ap.add_argument("--synthetic", type=int, default=0, help="n prompts from head_data's templates instead (seed 99)")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--copy", action="store_true", help="split agreement by what prompt lookup would do (copy-heavy "
                    "categories, writing and coding)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = ([{"category": "synthetic", "prompt": p} for p in first_round(random.Random(99), args.synthetic)]
            if args.synthetic else load_dataset(args.data, per_category=args.per_category))
    if args.copy:
        rows = [r for r in rows if r["category"] in COPY_CATEGORIES]
    target = load_backend("torch")
    drafters = [HeadDrafter(target, h, confidence=None) for h in args.heads]
    agree = [defaultdict(lambda: [0, 0]) for _ in drafters]
    topk, calib = defaultdict(lambda: [0, 0]), defaultdict(lambda: [0, 0])
    eos = target.tokenizer.eos_token_ids
    for row in rows:
        ctx = target.tokenizer.apply_chat_template([{"role": "user", "content": row["prompt"]}])[-1500:]
        target.reset(ctx)
        greedy = []
        for _ in range(args.tokens + args.depth):
            y = int(target.score()[0].argmax())
            greedy.append(y)
            if y in eos:
                break
            target.commit([], y)
        for i, d in enumerate(drafters):  # all read the features the target recorded while decoding
            d.reset()
            d.prepare(ctx)
            for t in range(max(0, min(args.tokens, len(greedy) - args.depth))):
                links = chain(d, ctx + greedy[:t], greedy[t:t + args.depth])
                keys = ("ALL", lookup_class(ctx + greedy[:t], greedy[t])) if args.copy else (row["category"], "ALL")
                for c in keys:
                    agree[i][c][0] += links[0][1]
                    agree[i][c][1] += 1
                if i:
                    continue
                for k in (2, 4):
                    topk[k][0] += greedy[t] in links[0][2][:k]
                    topk[k][1] += 1
                for depth, (p, ok, _) in enumerate(links[:3]):
                    b = next(j for j in range(len(BINS) - 1) if p < BINS[j + 1])
                    calib[depth, b][0] += ok
                    calib[depth, b][1] += 1
    names = [os.path.basename(h) if h else "shipped" for h in args.heads]
    print("top-1 agreement at depth 1 (tokens):", " | ".join(names))
    for c in sorted(agree[0], key=lambda c: (c == "ALL", c)):
        print(f"  {c:15s}", " ".join(f"{a[c][0] / a[c][1]:.2f}" for a in agree), f"({agree[0][c][1]})")
    print(f"{names[0]}: top-2 {topk[2][0] / topk[2][1]:.2f}, top-4 {topk[4][0] / topk[4][1]:.2f} at depth 1")
    for depth in range(3):
        cells = [f"[{BINS[b]:.1f},{min(BINS[b + 1], 1):.1f}) {calib[depth, b][0] / calib[depth, b][1]:.2f} "
                 f"(n={calib[depth, b][1]})" for b in range(len(BINS) - 1) if calib[depth, b][1]]
        print(f"  depth {depth + 1}, agreement by top-1 probability:", "  ".join(cells))


if __name__ == "__main__":
    main()
