"""`verispec certify` on registered rules and on users' rules given as package.module:function."""
from verispec.cli import main


def test_registered_rule_passes(capsys):
    assert main(["certify", "block", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "| block | exact |" in out and "PASS" in out


def test_user_rule_with_law_is_certified_exactly(capsys):
    assert main(["certify", "tests.unit.user_rules:my_token", "--quiet"]) == 0
    assert "exact" in capsys.readouterr().out


def test_user_rule_without_law_is_certified_by_sampling(capsys):
    assert main(["certify", "tests.unit.user_rules:sampled_only", "--quiet"]) == 0
    assert "sampled" in capsys.readouterr().out


def test_biased_user_rule_fails(capsys):
    assert main(["certify", "tests.unit.user_rules:broken", "--quiet"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_unknown_rule_is_a_clear_error(capsys):
    assert main(["certify", "no_such_module:rule", "--quiet"]) == 2
    assert "cannot load rule" in capsys.readouterr().err
