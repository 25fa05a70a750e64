#!/usr/bin/env python
"""torch's bfloat16 linear against its int8 weight-only kernel (`torch._weight_int8pack_mm`, what
`head_model.Int8Linear` calls) on the draft head's shapes, for 1, 3 and 8 rows: warm (weights in cache) and
cold (after streaming 300 MB, as the target's pass does between two head calls). Median microseconds.

Usage: PYTHONPATH=src python scripts/head_int8_kernels.py [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from verispec.draft.head_model import Int8Linear  # noqa: E402

SHAPES = {"fc": (576, 1152), "qkv": (1728, 576), "o": (576, 576), "gate_up": (3072, 576), "down": (576, 1536),
          "LM head rows": (8192, 576)}


def median_us(fn, flush: torch.Tensor | None, n: int = 40) -> float:
    times = []
    for _ in range(n):
        if flush is not None:
            flush.add_(1.0)  # evict the weights
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e6 * sorted(times)[n // 2]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    flush = torch.zeros(300_000_000 // 4)
    print("| weight | rows | bfloat16 warm / cold (us) | int8 warm / cold (us) | max error / max output |\n"
          "|---|---:|---:|---:|---:|")
    for name, (n, k) in SHAPES.items():
        w = torch.randn(n, k, dtype=torch.bfloat16) * 0.05
        q = Int8Linear(w, torch.bfloat16)
        for rows in (1, 3, 8):
            x = torch.randn(rows, k, dtype=torch.bfloat16)
            ref = F.linear(x.float(), w.float())
            err = float((q(x).float() - ref).abs().max() / ref.abs().max())
            bf = [median_us(lambda: F.linear(x, w), f) for f in (None, flush)]
            i8 = [median_us(lambda: q(x), f) for f in (None, flush)]
            print(f"| {name} {n} x {k} | {rows} | {bf[0]:.0f} / {bf[1]:.0f} | {i8[0]:.0f} / {i8[1]:.0f} | {err:.3f} |")


if __name__ == "__main__":
    main()
