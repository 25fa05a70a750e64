"""``verispec lab ...``: the coupling experiments as commands.

Wiring (done once in ``verispec/cli.py``)::

    from .lab.cli import add_parser
    add_parser(sub)          # sub = the main parser's add_subparsers(...)

``add_parser(subparsers)`` registers ``lab`` with the sub-commands

* ``coupling``    Pr[a = b] vs TV: optimal, Gumbel, weighted MinHash, (1-TV)/(1+TV)  (arXiv 2408.07978)
* ``protocol``    derived low-communication maximal coupling: Pr[a = b] vs bits      (arXiv 2408.07978 v2 claim)
* ``list``        GLS vs SpecInfer, SpecTr, optimal, list-matching bound, K = 1..20  (arXiv 2506.05632)
* ``compression`` distributed lossy compression with side information, Gaussian + 8x8 digits (2506.05632 s.5)
* ``all``         every one of the above

and the shared flags ``--out DIR`` (default ``lab_out/``), ``--seed``, ``--quick``, ``--pairs N``,
``--real/--no-real`` (next-token pairs of the embedded SmolLM2-135M-Instruct), ``--quiet`` (no progress bars).
Each command writes CSV + Markdown tables and PNG plots under ``--out`` and prints their paths. Bad input raises
``ValueError`` / ``FileNotFoundError`` (the main CLI prints them as one-line errors).
"""

from __future__ import annotations

import argparse
import json

COMMANDS = ("coupling", "protocol", "list", "compression", "all")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="lab_out", help="output folder (default: lab_out/)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random generator (default 0)")
    p.add_argument("--quick", action="store_true", help="small sizes (seconds, for smoke tests)")
    p.add_argument("--pairs", type=int, default=None, help="number of random pairs (default per command)")
    p.add_argument("--real", action=argparse.BooleanOptionalAction, default=True,
                   help="also use real SmolLM2 next-token pairs (default: on)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _brief(result: dict) -> dict:
    """The printable part of a result: paths and check counts, not the full tables."""
    return {k: v for k, v in result.items() if k not in ("rows", "summary")}


def run_lab(args: argparse.Namespace) -> int:
    """Dispatch ``verispec lab <what>``; prints one JSON line per experiment. Returns the exit status."""
    if args.pairs is not None and args.pairs < 1:
        raise ValueError(f"--pairs must be >= 1, got {args.pairs}")
    common = {"out": args.out, "seed": args.seed, "quick": args.quick, "show_progress": not args.quiet}
    todo = COMMANDS[:-1] if args.what == "all" else (args.what,)
    status = 0
    for what in todo:
        if what == "coupling":
            from . import coupling
            res = coupling.run(n_pairs=args.pairs, real=args.real, **common)
            status |= 0 if res["ok"] else 1
        elif what == "protocol":
            from . import protocol
            res = protocol.run(n_pairs=args.pairs, real=args.real, **common)
        elif what == "list":
            from . import listing
            res = listing.run(n_pairs=args.pairs, real=args.real, **common)
            status |= 1 if any(res["violations"].values()) else 0
        elif what == "compression":
            from . import compression, compression_images
            res = {"gaussian": _brief(compression.run(**common)), "digits": _brief(compression_images.run(**common))}
        else:  # argparse restricts the choices; kept for callers building Namespaces by hand
            raise ValueError(f"unknown lab command {what!r}; choose from {', '.join(COMMANDS)}")
        print(json.dumps({"lab": what, **_brief(res)}, default=str))
    return status


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``lab`` (with sub-commands ``coupling``, ``protocol``, ``list``, ``compression``, ``all``).

    ``subparsers`` is the object returned by ``ArgumentParser.add_subparsers``. The ``lab`` parser sets
    ``fn=run_lab`` (call ``args.fn(args)``; it returns an exit status). Returns the ``lab`` parser.
    """
    lab = subparsers.add_parser("lab", help="coupling experiments of the papers (tables + plots)",
                                description=__doc__.split("\n\n")[0])
    what = lab.add_subparsers(dest="what", required=True)
    helps = {"coupling": "Pr[a=b] vs TV: optimal, Gumbel, weighted MinHash, bound",
             "protocol": "near-optimal coupling with a little communication: Pr[a=b] vs bits",
             "list": "GLS acceptance vs K beside SpecInfer, SpecTr, optimal, list-matching bound",
             "compression": "lossy compression with side information: Gaussian and 8x8 digits",
             "all": "every lab experiment"}
    for name in COMMANDS:
        p = what.add_parser(name, help=helps[name])
        _common(p)
        p.set_defaults(fn=run_lab)
    return lab
