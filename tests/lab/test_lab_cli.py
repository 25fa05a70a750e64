"""lab cli: add_parser wires `lab` into any argparse parser; bad input raises ValueError."""
import argparse
import json

import pytest

from verispec.lab.cli import add_parser


def _parser():
    ap = argparse.ArgumentParser(prog="verispec")
    add_parser(ap.add_subparsers(dest="command", required=True))
    return ap


def test_parse_defaults():
    a = _parser().parse_args(["lab", "coupling"])
    assert (a.out, a.seed, a.quick, a.pairs, a.real, a.what) == ("lab_out", 0, False, None, True, "coupling")
    assert _parser().parse_args(["lab", "list", "--no-real", "--pairs", "3"]).real is False
    with pytest.raises(SystemExit):
        _parser().parse_args(["lab", "nope"])


def test_run_coupling_quick(tmp_path, capsys):
    a = _parser().parse_args(["lab", "coupling", "--quick", "--no-real", "--pairs", "4", "--quiet",
                              "--out", str(tmp_path / "o")])
    assert a.fn(a) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["lab"] == "coupling" and (tmp_path / "o" / "coupling.png").exists()


def test_bad_input_raises_value_error(tmp_path):
    a = _parser().parse_args(["lab", "protocol", "--pairs", "0", "--no-real", "--quiet"])
    with pytest.raises(ValueError):
        a.fn(a)
    f = tmp_path / "file"
    f.write_text("x")
    a = _parser().parse_args(["lab", "list", "--quick", "--no-real", "--quiet", "--out", str(f)])
    with pytest.raises(ValueError):
        a.fn(a)
