"""Negative controls (ALGORITHMS.md §10.5): every broken variant must be rejected by the same checks."""
import pytest

from verispec.certify.controls import NOISE_CONTROLS, RULE_CONTROLS
from verispec.certify.oracle import exact_check
from verispec.certify.sampled import chain_check, sampled_check
from verispec.certify.toy import make_pair
from verispec.verify import get_verifier

EXACT = [(r, kind, k) for r, _, kind, k in RULE_CONTROLS if r.exact_law and kind != "gumbel"]


@pytest.mark.parametrize("rule,kind,k", EXACT, ids=[r.name for r, _, _ in EXACT])
def test_exact_oracle_rejects(rule, kind, k):
    worst = 0.0
    for scenario in ("random", "close"):
        for seed in range(3):
            P, Q = make_pair(4, 4, seed, scenario)
            worst = max(worst, exact_check(rule, P, Q, 3 if k == 1 else 2, k, kind).tv)
    assert worst > 1e-4, f"{rule.name} passed the exact oracle (max TV {worst:.2e})"


SAMPLED = [(r, kind, k) for r, _, kind, k in RULE_CONTROLS if r.name != "control:block-standard-residual"]


@pytest.mark.parametrize("rule,kind,k", SAMPLED, ids=[r.name for r, _, _ in SAMPLED])
def test_sampled_check_rejects(rule, kind, k):
    P, Q = make_pair(3, 6, 2, "random")
    rep = sampled_check(rule, P, Q, 2, k, kind, n=100_000)
    assert not rep.ok, f"{rule.name} passed the sampled check: {rep}"


@pytest.mark.parametrize("source,rule,kind,k", NOISE_CONTROLS, ids=[s.__name__ for s, *_ in NOISE_CONTROLS])
def test_chain_check_rejects_noise_reuse(source, rule, kind, k):
    P, Q = make_pair(3, 8, 2, "random")
    rep, _ = chain_check(get_verifier(rule), P, Q, 2, k, kind, 4, n=100_000, noise_source=source(0))
    assert not rep.ok, f"{source.__name__} with {rule} passed the chain check: {rep}"
