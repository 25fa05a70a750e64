"""The `verispec` command line: certify, demo, bench."""
from __future__ import annotations

import argparse
import sys


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


def _cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo()
    return 0


def _cmd_bench(args) -> int:
    if args.what == "verifiers":
        from .bench import verifiers

        return verifiers.main(args.rest) or 0
    raise ValueError(f"unknown benchmark {args.what!r}")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="verispec", description="Lossless speculative decoding with certified verifiers")
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("certify", help="run the exactness oracle on verification rules")
    c.add_argument("rules", nargs="*", help="registered names, or package.module:function (default: all)")
    c.add_argument("--all", action="store_true", help="every registered rule")
    c.add_argument("--controls", action="store_true", help="also run the broken negative controls")
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    c.set_defaults(fn=_cmd_certify)
    d = sub.add_parser("demo", help="a short demonstration of the verifiers")
    d.set_defaults(fn=_cmd_demo)
    b = sub.add_parser("bench", help="benchmarks")
    b.add_argument("what", choices=["verifiers"])
    b.add_argument("rest", nargs=argparse.REMAINDER)
    b.set_defaults(fn=_cmd_bench)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ValueError as e:
        print(f"verispec: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("verispec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
