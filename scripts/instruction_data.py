#!/usr/bin/env python
"""Conversations for `verispec train-head --data` from human-written instructions: the embedded target answers each
record of a JSONL file greedily (docs/speed.md §12 used 1,710 records of databricks-dolly-15k, CC BY-SA 3.0).

A record is {"instruction": ..., "context": ...} (Dolly's fields; the context may be empty) or {"prompt": ...}.
`scripts/data/written_requests.jsonl` holds 1,770 requests of the second kind, written for this by the developers'
language-model helpers (writing, roleplay and advice, explanations, reasoning and math, code, work on a given
passage), none sharing six words in a row with Spec-Bench dev (docs/speed.md §18: a head trained on them two tokens
deep did not improve; §20: trained three deep, with the synthetic rounds, it did, and ships).
A context joins its instruction before or after it (a coin flip per record), cut to 600 words. Never pass
Spec-Bench here: it is for evaluation only.

Usage: PYTHONPATH=src python scripts/instruction_data.py RECORDS.jsonl OUT.pt [--limit N] [--max-new-tokens 160]
       (1,710 records: 11 min on 2 cores)
"""
import argparse
import json
import os
import random
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
from verispec.draft.head_data import answer, load_target  # noqa: E402


def prompt_of(record: dict, rng: random.Random) -> str:
    if "prompt" in record:
        return str(record["prompt"]).strip()
    ins, ctx = str(record["instruction"]).strip(), " ".join(str(record.get("context") or "").split()[:600])
    if not ctx:
        return ins
    return f"{ins}\n\n{ctx}" if rng.random() < 0.5 else f"{ctx}\n\n{ins}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("records")
    ap.add_argument("out")
    ap.add_argument("--limit", type=int, default=0, help="the first N records only (0: all)")
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    with open(args.records, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    records = records[:args.limit] if args.limit else records
    rng = random.Random(args.seed)
    prompts = [prompt_of(r, rng) for r in records]
    model, tok = load_target()
    t0 = time.time()
    convs = answer(model, tok, prompts, args.max_new_tokens, False)
    torch.save(convs, args.out)
    print(f"answered {len(convs)} in {time.time() - t0:.0f} s; {sum(len(c[0]) for c in convs)} tokens, "
          f"{sum(len(c[0]) - c[1] for c in convs)} of them answers")


if __name__ == "__main__":
    main()
