"""Exact losslessness: the law of one iteration, completed by the target, equals the target's law.

Every rule with a closed-form law, on tiny context-dependent models (ALGORITHMS.md §0, §10.1):
V in 2..7, gamma <= 3, k <= 3, with p = q, one-hot p (temperature 0), one-hot q (deterministic
drafts), zeros and disjoint supports. Agreement to 1e-9.
"""
import pytest

from verispec.certify.oracle import exact_check
from verispec.certify.toy import SCENARIOS, make_pair
from verispec.verify import get_verifier

TOL = 1e-9

# (rule, kind, k, V, gamma)
CASES = [
    ("greedy", "iid", 1, 5, 3), ("greedy", "onehot", 1, 7, 3), ("greedy", "iid", 2, 4, 2),
    ("token", "iid", 1, 2, 3), ("token", "iid", 1, 7, 3), ("token", "onehot", 1, 6, 3),
    ("block", "iid", 1, 2, 3), ("block", "iid", 1, 5, 3), ("block", "iid", 1, 7, 2), ("block", "onehot", 1, 6, 3),
    ("specinfer", "iid", 1, 4, 3), ("specinfer", "iid", 2, 4, 2), ("specinfer", "iid", 3, 3, 2),
    ("specinfer", "onehot", 3, 5, 3),
    ("specinfer-wor", "wor", 2, 5, 2), ("specinfer-wor", "wor", 3, 4, 2), ("specinfer-wor", "onehot", 2, 4, 3),
    ("spectr", "iid", 1, 4, 3), ("spectr", "iid", 2, 4, 2), ("spectr", "iid", 3, 3, 2), ("spectr", "iid", 2, 2, 3),
]


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("rule,kind,k,V,gamma", CASES)
def test_exact_law(rule, kind, k, V, gamma, scenario):
    for seed in range(2):
        P, Q = make_pair(V, gamma + 1, seed, scenario)
        rep = exact_check(get_verifier(rule), P, Q, gamma, k, kind)
        assert rep.tv < TOL, (rule, kind, k, V, gamma, scenario, seed, rep)
