"""Command-line flags shared by `verispec generate` and `verispec bench` (no torch import: `--help` stays fast)."""
from __future__ import annotations

import argparse

TORCH_DTYPES = ("auto", "float32", "bfloat16", "float16")  # --dtype: names `torch_hf.resolve_dtype` takes
DRAFTERS = ("ngram", "model", "ngram+model", "head", "ngram+head", "early-exit", "none")  # --drafter: `engine.build`
MAX_GAMMA = 12  # --max-gamma: the longest draft the controller may choose (docs/speed.md §13: 12 against 8 on torch)
HEAD_DRAFTERS = ("head", "ngram+head")  # the drafters that read the target's features (torch only) and the head flags
HEAD_QUANTS = ("int4", "int8", "none")  # --head-quant: how the head's weights are stored for drafting


def add_sampling_args(parser: argparse.ArgumentParser, temperature: float) -> None:
    """--temperature (default `temperature`), --top-k, --top-p, --min-p: read by `SamplingParams.from_args`."""
    parser.add_argument("--temperature", type=float, default=temperature)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--min-p", type=float, default=0.0)


def add_prefill_arg(parser: argparse.ArgumentParser) -> None:
    """--torch-prefill TOKENS (`EngineConfig.torch_prefill`): the llama.cpp backend's prompt prefill through torch."""
    parser.add_argument("--torch-prefill", type=int, default=None, metavar="TOKENS",
                        help="llama.cpp backend: prefill prompts of at least TOKENS tokens through torch's oneDNN "
                        "products (a BF16 Llama GGUF; 1.3-1.8x faster on a CPU with AVX512-BF16, in float32 "
                        "1.2-1.5x on an AVX2 CPU from 300 tokens); 0: never (default: from 128 tokens, 192 "
                        "where torch computes in float32, where it applies)")


def add_head_args(parser: argparse.ArgumentParser, what: str) -> None:
    """--draft-head, --head-tree, --head-quant, --copy-branch for the head drafter; `what` names the flag that picks it
    ("--drafter head", "--drafters head, ngram+head"). Read by `head_config`."""
    parser.add_argument("--draft-head", default=None, help=f"{what}: a head file from `verispec train-head` "
                        "(default: the one shipped for the embedded model)")
    parser.add_argument("--head-tree", type=int, default=None, help=f"{what} at temperature 0: draft a tree of up "
                        "to N nodes, those the head rates most likely to be accepted (EAGLE-2; default 10; 0: chains)")
    parser.add_argument("--head-quant", choices=HEAD_QUANTS, default=None,
                        help=f"{what}: draft with the head's weights quantized: int4 (4-bit groups), int8 (int8 rows; "
                        "~2x cheaper head calls than bfloat16 ones, int4 ~20%% cheaper again) or none (float; default: "
                        "int4 on a CPU with native bfloat16, none on others, where the 4-bit kernel is slow; lossless "
                        "either way, the verifier checks every draft)")
    parser.add_argument("--copy-branch", type=int, default=None, help="ngram+head at temperature 0: add to the head's "
                        "tree the N tokens that followed the last token's most recent earlier occurrence, as many as pay at "
                        "what a row costs (default 4; 0: none)")


def head_config(args: argparse.Namespace) -> dict:
    """The `EngineConfig` / bench `Settings` keywords of the head flags given (those left out keep their defaults)."""
    given = {"draft_head": args.draft_head, "head_tree": args.head_tree, "head_quant": args.head_quant,
             "copy_branch": args.copy_branch}
    return {k: v for k, v in given.items() if v is not None}


HEAD_FLAGS = {"draft_head": "--draft-head", "head_tree": "--head-tree", "head_quant": "--head-quant",
              "copy_branch": "--copy-branch", "head_confidence": "--head-confidence"}


def check_head_flags(args: argparse.Namespace) -> None:
    """`verispec generate`: a ValueError for a head flag given with a drafter that would ignore it."""
    given = [k for k in HEAD_FLAGS if getattr(args, k, None) is not None]
    wrong = [k for k in given if args.drafter not in (("ngram+head",) if k == "copy_branch" else HEAD_DRAFTERS)]
    if wrong:
        raise ValueError(f"{', '.join(HEAD_FLAGS[k] for k in wrong)} appl{'ies' if len(wrong) == 1 else 'y'} to --drafter "
                         f"{'ngram+head' if wrong == ['copy_branch'] else 'head / ngram+head'}, not {args.drafter}")
