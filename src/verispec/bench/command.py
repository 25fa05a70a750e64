"""`verispec bench [run]`: the side-by-side benchmark from the command line.

    verispec bench --per-category 2 --max-tokens 128 --temperature 0 \\
        --backends llamacpp,torch --verifiers auto --drafters ngram,model --draft-model q4_0 --out bench-out

writes ``bench-out/bench.json`` (every raw figure; rewritten after every prompt, so a crash or
Ctrl-C keeps what was measured), ``bench-out/report.md`` and the PNG plots. `--configs` adds
configurations by name (configs.py grammar) to the grid made by the other flags.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ..cli_args import MAX_GAMMA, TORCH_DTYPES, add_head_args, add_sampling_args, head_config


def _list(cast=str):
    def parse(s: str) -> list:
        items = [x.strip() for x in s.split(",") if x.strip()]
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        try:
            return [None if x == "auto" and cast is not str else cast(x) for x in items]
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


def build_parser() -> argparse.ArgumentParser:
    from .configs import BASELINES

    ap = argparse.ArgumentParser(prog="verispec bench [run]", description=__doc__.split("\n")[0],
                                 epilog="Also: verispec bench verifiers --help (verifier micro-benchmark).")
    ap.add_argument("--dataset", default="spec-bench", help="spec-bench (dev split), humaneval, or a JSONL path")
    ap.add_argument("--per-category", type=int, default=None, help="first n prompts of every category")
    ap.add_argument("--skip-per-category", type=int, default=0, help="skip the first n prompts of every category "
                    "(a second sample disjoint from an earlier --per-category n run)")
    ap.add_argument("--limit", type=int, default=None, help="first n prompts overall (after --per-category)")
    ap.add_argument("--backends", type=_list(), default=["llamacpp"], help="llamacpp,torch")
    ap.add_argument("--baselines", type=_list(), default=["all"],
                    help=f"{','.join(BASELINES)} | all | none (each runs on the backends that host it)")
    ap.add_argument("--verifiers", type=_list(), default=["auto"], help="verification rules (auto: greedy at T=0, "
                    "else block / specinfer)")
    ap.add_argument("--drafters", type=_list(), default=["ngram"], help="ngram, model, ngram+model, head, ngram+head, early-exit")
    ap.add_argument("--draft-model", default=None, help="for --drafters model and hf-assist: a path, or a copy of "
                    "the target built on first use: q4_0 (re-quantized), truncL (first L blocks), skipA-B")
    add_head_args(ap, "--drafters head, ngram+head")
    ap.add_argument("--k", type=_list(int), default=[1], help="numbers of drafts, e.g. 1,2,4,8")
    ap.add_argument("--gamma", type=_list(int), default=[None], help="draft lengths, e.g. 4,8 (auto: the controller)")
    ap.add_argument("--configs", type=_list(), default=[], help="extra configurations by name, e.g. "
                    "verispec:spectr:model:k4:g4@llamacpp")
    add_sampling_args(ap, temperature=0.0)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=1, help="runs of every prompt and configuration (seeds differ); "
                    "above temperature 0 the texts' lengths move tokens/s, so the report adds speedups at matched "
                    "lengths")
    ap.add_argument("--model", default=None, help="target model (default: the embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dtype", default=None, choices=TORCH_DTYPES,
                    help="torch configurations (verispec and generate): weights / compute dtype (default auto)")
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--max-gamma", type=int, default=MAX_GAMMA)
    ap.add_argument("--no-acceptance", action="store_true", help="skip the achieved-vs-optimal root analysis")
    ap.add_argument("--no-warmup", action="store_true")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--out", default="bench-out", help="output folder")
    ap.add_argument("--from-json", nargs="+", default=None, metavar="JSON",
                    help="run nothing: re-render the report and plots from saved bench.json files (merged)")
    ap.add_argument("--common-prompts", action="store_true",
                    help="with --from-json: keep only the prompts every configuration completed")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


def config_names(args) -> list[str]:
    from .configs import BASELINES, expand, parse_name

    base = list(BASELINES) if args.baselines == ["all"] else [] if args.baselines == ["none"] else args.baselines
    names = expand(args.backends, base, args.verifiers, args.drafters, args.k, args.gamma, args.temperature)
    for n in args.configs:
        parse_name(n)  # a clear error before any model loads
    return list(dict.fromkeys(names + args.configs))


def main(argv: list[str] | None = None) -> int:
    from ..sampling import SamplingParams
    from . import report
    from .configs import Settings
    from .datasets import load_dataset
    from .runner import run_bench

    ap = build_parser()
    args = ap.parse_args(argv)
    if args.samples < 1:
        ap.error(f"--samples must be >= 1, got {args.samples}")
    out = Path(args.out)
    if args.from_json:
        raw = report.merge([report.read_json(p) for p in args.from_json], args.common_prompts)
        return _write(raw, out, "verispec bench --from-json " + " ".join(args.from_json), args.no_plots)
    params = SamplingParams.from_args(args)  # validates
    rows = load_dataset(args.dataset, args.limit, args.per_category, args.skip_per_category)
    names = config_names(args)
    settings = Settings(model=args.model, draft_model=args.draft_model,
                        n_threads=args.threads, n_ctx=args.n_ctx,
                        dtype=args.dtype, max_gamma=args.max_gamma, record_acceptance=not args.no_acceptance,
                        **head_config(args))
    command = "verispec bench " + shlex.join(sys.argv[2:] if argv is None else argv)
    if not args.quiet:
        times = f" x {args.samples} samples" if args.samples > 1 else ""
        print(f"{len(rows)} prompts{times} x {len(names)} configurations -> {out}/", file=sys.stderr)

    def save(raw: dict) -> None:
        raw["meta"]["command"] = command
        report.write_json(raw, report.aggregate(raw), out / "bench.json")

    raw = run_bench(rows, names, settings, params, args.max_tokens, args.seed, progress=not args.quiet,
                    warmup=not args.no_warmup, on_progress=save, samples=args.samples)
    rc = _write(raw, out, command, args.no_plots)
    for e in raw["errors"]:
        print(f"verispec bench: {e['config']} / {e['prompt']}: {e['error']}", file=sys.stderr)
    if raw["interrupted"]:
        print(f"verispec bench: interrupted; partial results in {out}/", file=sys.stderr)
        return 130
    return rc


def _write(raw: dict, out: Path, command: str, no_plots: bool) -> int:
    """bench.json, report.md and the plots into `out`; prints the report. 1 if nothing was measured."""
    from . import plots, report

    raw["meta"]["command"] = raw["meta"].get("command") or command
    table = report.aggregate(raw)
    report.write_json(raw, table, out / "bench.json")
    pngs = [] if no_plots else plots.all_plots(table, out)
    md = report.markdown(raw, table, raw["meta"]["command"], [str(p) for p in pngs])
    (out / "report.md").write_text(md)
    print(md)
    return 0 if raw["results"] else 1
