#!/usr/bin/env python
"""Conversations for `verispec train-head --data` from human-written instructions: the embedded target answers each
record of a JSONL file greedily (docs/speed.md §12 used 1,710 records of databricks-dolly-15k, CC BY-SA 3.0).

A record is {"instruction": ..., "context": ...} (Dolly's fields; the context may be empty) or {"prompt": ...}.
`scripts/data/written_requests.jsonl` holds 1,770 requests of the second kind, written for this by the developers'
language-model helpers (writing, roleplay and advice, explanations, reasoning and math, code, work on a given
passage; docs/speed.md §18: a head trained on them two tokens deep did not improve; §20: trained three deep, with
the synthetic rounds, it did, and ships); `written_requests_2.jsonl` 1,889 more, written the same way (§21:
400 of them carry a passage of 120-350 words). None shares six words in a row with Spec-Bench dev (a test
checks; `--exclude` drops such records, Spec-Bench dev by default).
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
from tqdm import tqdm

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
from verispec.bench.datasets import DEV  # noqa: E402
from verispec.draft.head_data import answer, load_target, sharing_runs, turns_of  # noqa: E402


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
    ap.add_argument("--exclude", nargs="*", default=[str(DEV)] if DEV.is_file() else [],
                    help="JSONL files ('turns' or 'prompt' rows) no request may share six words in a row with "
                         "(default: Spec-Bench dev, evaluation only); such requests are dropped")
    args = ap.parse_args()
    for path in [args.records, *args.exclude]:
        if not os.path.isfile(path):
            ap.error(f"no such file: {path}")
    torch.set_num_threads(2)
    with open(args.records, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    records = records[:args.limit] if args.limit else records
    rng = random.Random(args.seed)
    prompts = [prompt_of(r, rng) for r in records]
    reference = [t for path in args.exclude for t in turns_of(path)]
    drop = set(sharing_runs(prompts, reference)) if reference else set()
    if drop:
        print(f"dropped {len(drop)} requests sharing six words in a row with {', '.join(args.exclude)}")
        prompts = [p for i, p in enumerate(prompts) if i not in drop]
    model, tok = load_target()
    t0 = time.time()
    with tqdm(total=len(prompts), desc="target answers", unit="request") as bar:
        convs = answer(model, tok, prompts, args.max_new_tokens, False, progress=bar)
    torch.save(convs, args.out)
    print(f"answered {len(convs)} in {time.time() - t0:.0f} s; {sum(len(c[0]) for c in convs)} tokens, "
          f"{sum(len(c[0]) - c[1] for c in convs)} of them answers")


if __name__ == "__main__":
    main()
