"""Command-line flags shared by `verispec generate` and `verispec bench` (no torch import: `--help` stays fast)."""
from __future__ import annotations

import argparse

TORCH_DTYPES = ("auto", "float32", "bfloat16", "float16")  # --dtype: names `torch_hf.resolve_dtype` takes
DRAFTERS = ("ngram", "model", "ngram+model", "head", "ngram+head", "early-exit", "none")  # --drafter: `engine.build`


def add_sampling_args(parser: argparse.ArgumentParser, temperature: float) -> None:
    """--temperature (default `temperature`), --top-k, --top-p, --min-p: read by `SamplingParams.from_args`."""
    parser.add_argument("--temperature", type=float, default=temperature)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--min-p", type=float, default=0.0)
