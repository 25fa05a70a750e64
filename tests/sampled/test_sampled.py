"""Sampled tests of the production path (drafts + verifier + noise keying), >= 1e5 draws per case.

Single iterations against the exact target law under a TV bound calibrated to the sample count,
and multi-iteration chains (chi-square + TV bound), which catch noise reuse across iterations.
"""
import pytest

from verispec.certify.sampled import chain_check, sampled_check
from verispec.certify.toy import make_pair
from verispec.verify import get_verifier

# (rule, kind, k)
RULES = [
    ("greedy", "iid", 1), ("token", "iid", 1), ("token", "onehot", 1), ("block", "iid", 1),
    ("block", "onehot", 1), ("specinfer", "iid", 3), ("specinfer", "onehot", 2), ("specinfer-wor", "wor", 3),
    ("spectr", "iid", 3), ("gumbel", "gumbel", 1), ("gumbel", "iid", 1), ("gls", "gumbel", 3),
    ("gls", "iid", 2), ("gls-strong", "gumbel", 3),
]


@pytest.mark.parametrize("rule,kind,k", RULES)
def test_single_iteration(rule, kind, k):
    P, Q = make_pair(3, 6, 5, "close")
    rep = sampled_check(get_verifier(rule), P, Q, 2, k, kind, n=100_000, seed=1)
    assert rep.ok, rep


@pytest.mark.parametrize("rule,kind,k", RULES)
def test_multi_iteration_chain(rule, kind, k):
    P, Q = make_pair(3, 8, 6, "random")
    rep, _ = chain_check(get_verifier(rule), P, Q, 2, k, kind, 4, n=100_000, seed=2)
    assert rep.ok, rep
