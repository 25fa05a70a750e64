"""Draft-model overlap with the target (1 - TV per token), for choosing a benchmark drafter.

The derived drafts themselves (re-quantized, truncated, layer-skipped copies) are built by
``backends/derived.py``.
"""
from __future__ import annotations

from ..backends.derived import resolve_draft_model

__all__ = ["resolve_draft_model", "token_overlap"]


def token_overlap(target: str, draft: str, prompts: list[str], tokens: int = 64, temperature: float = 1.0,
                  seed: int = 0, n_threads: int = 1) -> float:
    """Mean per-token overlap sum_x min(p, q) = 1 - TV(p, q): the single-draft acceptance of token
    verification (Leviathan et al. 2023), over the target's own samples (teacher forcing).

    For every prompt the target samples `tokens` tokens (verispec plain decoding, `seed`); both models
    then score that text in one pass and the overlap of their laws, after the same temperature, is
    averaged over positions.
    """
    import torch

    from ..backends import load_backend
    from ..engine.generate import Engine
    from ..sampling import SamplingParams, probs_from_logits

    params = SamplingParams(temperature)
    tgt = load_backend("llamacpp", target, n_ctx=4096, n_threads=n_threads)
    dft = load_backend("llamacpp", draft, n_ctx=4096, n_threads=n_threads)
    eng = Engine(tgt)
    total, n = 0.0, 0
    for prompt in prompts:
        msgs = [{"role": "user", "content": prompt}]
        out = eng.generate(msgs, params, tokens, seed=seed).tokens
        if len(out) < 2:
            continue
        ctx = tgt.tokenizer.apply_chat_template(msgs)
        laws = []
        for be in (tgt, dft):
            be.reset(ctx)  # pending = the last prompt token; then the sampled text as one chain
            logits = be.score(torch.tensor(out[:-1]), torch.arange(-1, len(out) - 2))  # [len(out), V]
            laws.append(probs_from_logits(logits, params))
        total += float(torch.minimum(*laws).sum())
        n += len(out)
    tgt.close()
    dft.close()
    return total / n if n else float("nan")


def main(argv: list[str] | None = None) -> int:
    """python -m verispec.bench.drafts SPEC [SPEC ...]: build each draft copy and print its overlap."""
    import argparse

    from ..backends import default_model_path
    from .datasets import load_dataset

    ap = argparse.ArgumentParser(prog="python -m verispec.bench.drafts", description=main.__doc__)
    ap.add_argument("specs", nargs="+", help="q4_0, truncL, skipA-B, or a GGUF path")
    ap.add_argument("--model", default=None, help="target GGUF (default: the embedded SmolLM2)")
    ap.add_argument("--prompts", type=int, default=7, help="Spec-Bench dev prompts (spread over the file)")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=1.0)
    args = ap.parse_args(argv)
    target = args.model or default_model_path()
    rows = load_dataset("spec-bench")
    picked = [rows[i * len(rows) // args.prompts]["prompt"][:1500] for i in range(args.prompts)]
    for spec in args.specs:
        ov = token_overlap(target, resolve_draft_model(spec, target), picked, args.tokens, args.temperature)
        print(f"{spec}\t1 - TV = {ov:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
