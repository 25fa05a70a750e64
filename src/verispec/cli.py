"""The `verispec` command line: certify, demo, bench."""
from __future__ import annotations

import argparse
import sys

from .cli_args import (DRAFTERS, MAX_GAMMA, TORCH_DTYPES, add_head_args, add_prefill_arg, add_sampling_args,
                       check_head_flags, head_config)


def _cmd_certify(args) -> int:
    from .certify.run import all_names, certify, certify_many, format_rows

    names = all_names() if args.all or not args.rules else args.rules
    rows = certify_many(names, progress=not args.quiet)
    print(format_rows(rows))
    status = 0 if all(r.ok for r in rows) else 1
    if args.controls:
        from .certify.controls import RULE_CONTROLS

        ctrl = [certify(rule, progress=not args.quiet) for rule, *_ in RULE_CONTROLS]
        print("\nNegative controls (broken rules from real bug reports; every one must FAIL):")
        print(format_rows(ctrl))
        if any(r.ok for r in ctrl):
            print("error: a broken control passed: the oracle has lost its teeth", file=sys.stderr)
            status = 1
    return status


def _cmd_generate(args) -> int:
    import json

    from .engine.build import EngineConfig, build_engine
    from .sampling import SamplingParams

    params = SamplingParams.from_args(args)  # validates
    if args.max_tokens <= 0:
        raise ValueError(f"--max-tokens must be > 0, got {args.max_tokens}")
    check_head_flags(args)
    cfg = EngineConfig(backend=args.backend, model=args.model, model_format=args.model_format, drafter=args.drafter, draft_model=args.draft_model,
                       early_exit_layers=args.early_exit_layers, verifier=args.verifier, k=args.k,
                       gamma=args.gamma, max_gamma=args.max_gamma, n_threads=args.threads, n_ctx=args.n_ctx,
                       dtype=args.dtype, draft_backend=args.draft_backend, torch_prefill=args.torch_prefill,
                       draft_window=args.draft_window or None, **head_config(args),
                       **({} if args.head_confidence is None else {"head_confidence": args.head_confidence or None}))
    engine = build_engine(cfg)
    prompt = args.prompt if args.prompt != "-" else sys.stdin.read()
    stream = None if args.json else (lambda s: print(s, end="", flush=True))
    gen = engine.generate(prompt, params, args.max_tokens, args.stop or (), args.seed, args.chat, on_text=stream)
    if args.json:
        print(json.dumps({"text": gen.text, "tokens": gen.tokens, "stats": gen.stats.to_dict(),
                          "config": vars(cfg)}, indent=2))
    else:
        print()
        print(f"[{engine.verifier_for(params).name} + {args.drafter}] {gen.stats.summary()}", file=sys.stderr)
    return 0


def _layer_list(text: str) -> tuple[int, ...]:
    """'2,15' -> (2, 15): layer numbers >= 1, for --taps."""
    try:
        taps = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ValueError(f"--taps takes layer numbers like 2,15, got {text!r}") from None
    if any(t < 1 for t in taps):
        raise ValueError(f"--taps: layer numbers start at 1, got {text!r}")
    return taps


def _cmd_train_head(args) -> int:
    import torch

    from .draft.head_train import run

    if args.threads:
        torch.set_num_threads(args.threads)
    run(args.model, args.out, args.prompts, args.max_new_tokens, args.epochs, args.vocab, args.intermediate,
        args.depth, args.lr, args.seed, args.data, args.save_data, init=args.init, passages=args.passages,
        taps=_layer_list(args.taps), feature_loss=args.feature_loss)
    return 0


def _cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo()
    return 0


def _cmd_bench(args) -> int:
    """`verispec bench [run] [flags]` (bench/command.py) or `verispec bench verifiers [flags]`."""
    rest = list(args.rest)
    if rest[:1] == ["verifiers"]:
        from .bench import verifiers

        return verifiers.main(rest[1:]) or 0
    from .bench import command

    return command.main(rest[1:] if rest[:1] == ["run"] else rest)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="verispec", description="Lossless speculative decoding with certified verifiers")
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("certify", help="run the exactness oracle on verification rules")
    c.add_argument("rules", nargs="*", help="registered names, or package.module:function (default: all)")
    c.add_argument("--all", action="store_true", help="every registered rule")
    c.add_argument("--controls", action="store_true", help="also run the broken negative controls")
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    c.set_defaults(fn=_cmd_certify)
    g = sub.add_parser("generate", help="generate text with lossless speculative decoding")
    g.add_argument("prompt", help="the prompt (- reads standard input)")
    g.add_argument("--model", default=None, help="GGUF file or Hugging Face directory (default: embedded SmolLM2-135M-Instruct)")
    g.add_argument("--model-format", default=None, choices=["bf16", "f16", "q4_1"],
                   help="format of the embedded model: bf16 (default; llama.cpp scores drafts cheaply in it), "
                   "f16, or q4_1 (the shipped file)")
    g.add_argument("--backend", default="llamacpp", choices=["llamacpp", "torch"])
    g.add_argument("--drafter", default="ngram", choices=list(DRAFTERS),
                   help="ngram: prompt lookup; model: --draft-model; ngram+model: lookup where the text repeats, "
                   "the draft model elsewhere; head: a trained EAGLE-style head on the target's features (torch); "
                   "ngram+head: lookup, else the head; early-exit: the target's first layers (torch)")
    add_head_args(g, "--drafter head")
    g.add_argument("--head-confidence", type=float, default=None, help="--drafter head at temperature 0 with "
                   "--head-tree 0: a chain stops where the product of the head's top-1 probabilities falls below this "
                   "(default 0.15; 0: never)")
    g.add_argument("--draft-model", default=None, help="draft model for --drafter model: a GGUF file, a Hugging Face "
                   "directory, or a copy of the target built on first use (q4_0, truncL, skipA-B)")
    g.add_argument("--draft-backend", default=None, choices=["llamacpp", "torch"],
                   help="backend of the draft model (default: llamacpp for a GGUF file, else the target's)")
    g.add_argument("--draft-window", type=int, default=256,
                   help="the draft model sees the context's last N..2N tokens (0: all of it)")
    g.add_argument("--dtype", default=None, choices=TORCH_DTYPES,
                   help="torch backend: weights and compute dtype (default auto: bfloat16 where the CPU has it)")
    g.add_argument("--early-exit-layers", type=int, default=8)
    g.add_argument("--verifier", default="auto", help="greedy, token, block, specinfer, specinfer-wor, spectr, "
                   "gumbel, gls, gls-strong, or auto (greedy at temperature 0, else block)")
    g.add_argument("-k", type=int, default=1, help="number of drafts (multi-draft verifiers)")
    g.add_argument("--gamma", type=int, default=None, help="fixed draft length (default: the controller decides)")
    g.add_argument("--max-gamma", type=int, default=MAX_GAMMA)
    add_sampling_args(g, temperature=0.7)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--max-tokens", type=int, default=256)
    g.add_argument("--stop", action="append", help="stop string (repeatable)")
    g.add_argument("--chat", action=argparse.BooleanOptionalAction, default=True, help="apply the chat template")
    g.add_argument("--threads", type=int, default=None)
    g.add_argument("--n-ctx", type=int, default=4096)
    add_prefill_arg(g)
    g.add_argument("--json", action="store_true", help="print one JSON object (text, tokens, stats)")
    g.set_defaults(fn=_cmd_generate)
    h = sub.add_parser("train-head", help="train an EAGLE-style draft head on the target's own answers (torch)")
    h.add_argument("--model", default=None, help="target: GGUF file or Hugging Face directory (default: embedded)")
    h.add_argument("--out", default=None, help="head file to write (default: the shipped head's path)")
    h.add_argument("--prompts", type=int, default=1280, help="synthetic prompts the target answers (never Spec-Bench)")
    h.add_argument("--passages", type=int, default=0,
                   help="prompts around human-written passages (Python's own documentation) the target answers")
    h.add_argument("--data", nargs="*", default=None, help="conversation files of earlier rounds (--save-data) to add")
    h.add_argument("--save-data", default=None, help="write this round's conversations to this file")
    h.add_argument("--max-new-tokens", type=int, default=160)
    h.add_argument("--epochs", type=int, default=5)
    h.add_argument("--vocab", type=int, default=8192, help="draft vocabulary: the answers' commonest tokens")
    h.add_argument("--intermediate", type=int, default=1024, help="the head's MLP width")
    h.add_argument("--depth", type=int, default=2, help="chain depth unrolled in training (EAGLE-3's test)")
    h.add_argument("--lr", type=float, default=1e-3)
    h.add_argument("--init", default=None, help="a head file to train further (its vocabulary and sizes are kept)")
    h.add_argument("--taps", default="",
                   help="target layers whose outputs the head also reads, e.g. 2,15 (EAGLE-3's low and middle "
                        "features)")
    h.add_argument("--feature-loss", type=float, default=1.0,
                   help="weight of the feature regression beside the token loss (0: tokens alone, as EAGLE-3)")
    h.add_argument("--seed", type=int, default=0)
    h.add_argument("--threads", type=int, default=None)
    h.set_defaults(fn=_cmd_train_head)
    d = sub.add_parser("demo", help="a short demonstration of the verifiers")
    d.set_defaults(fn=_cmd_demo)
    # every flag goes through to bench/command.py ('run', the default) or bench/verifiers.py ('verifiers')
    b = sub.add_parser("bench", prefix_chars="+", add_help=False,
                       help="benchmarks: `verispec bench [run] --help`, `verispec bench verifiers --help`")
    b.add_argument("rest", nargs=argparse.REMAINDER)
    b.set_defaults(fn=_cmd_bench)
    from .lab.cli import add_parser as add_lab

    add_lab(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"verispec: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("verispec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
