"""Closed-form checkpoints (ALGORITHMS.md §10.2) and the optimality claims between rules."""
import math

import pytest
import torch

from verispec.certify.oracle import build_outcomes, exact_check
from verispec.certify.toy import ToyLM, make_pair
from verispec.coupling.kseq import kseq_acceptance
from verispec.coupling.optimal import optimal_acceptance
from verispec.verify import get_verifier


def _constant(V, dist, max_len):
    n = sum(V**m for m in range(max_len + 1))
    return ToyLM(V, max_len, torch.tensor(dist, dtype=torch.float64).expand(n, V).clone())


def test_toy_10_9_vs_11_9():
    """p = (1/3, 2/3), q = (2/3, 1/3), gamma = 2: E[accepted] = 10/9 (token), 11/9 (block)."""
    P, Q = _constant(2, [1 / 3, 2 / 3], 3), _constant(2, [2 / 3, 1 / 3], 3)
    tok = exact_check(get_verifier("token"), P, Q, 2, 1, "iid")
    blk = exact_check(get_verifier("block"), P, Q, 2, 1, "iid")
    assert tok.tv < 1e-12 and blk.tv < 1e-12
    assert tok.expected_tokens - 1 == pytest.approx(10 / 9, abs=1e-12)
    assert blk.expected_tokens - 1 == pytest.approx(11 / 9, abs=1e-12)


@pytest.mark.parametrize("scenario", ["random", "close", "zeros"])
def test_block_at_least_token(scenario):
    """Block verification is never worse than token verification (Sun et al., Theorem 2)."""
    for seed in range(6):
        for V, gamma in [(2, 3), (4, 3), (6, 2)]:
            P, Q = make_pair(V, gamma + 1, seed, scenario)
            tok = exact_check(get_verifier("token"), P, Q, gamma, 1, "iid").expected_tokens
            blk = exact_check(get_verifier("block"), P, Q, gamma, 1, "iid").expected_tokens
            assert blk >= tok - 1e-12


def test_temperature_zero_block_equals_token():
    P, Q = make_pair(5, 4, 0, "onehot-p")
    tok = exact_check(get_verifier("token"), P, Q, 3, 1, "iid").expected_tokens
    blk = exact_check(get_verifier("block"), P, Q, 3, 1, "iid").expected_tokens
    assert blk == pytest.approx(tok, abs=1e-12)


def test_p_equals_q_accepts_everything():
    P, Q = make_pair(5, 4, 1, "equal")
    for rule in ("token", "block"):
        assert exact_check(get_verifier(rule), P, Q, 3, 1, "iid").expected_tokens == pytest.approx(4, abs=1e-12)


def _root_acceptance(rule, P, Q, k):
    """P(at least one draft accepted at the root) from the rule's exact law."""
    out, p = build_outcomes(P, Q, 1, k, "iid")
    law = get_verifier(rule).law(out.tree, p)
    return (out.weight * law[:, 1:].sum((1, 2))).sum().item()


@pytest.mark.parametrize("k", [1, 2, 3])
def test_kseq_acceptance_formula_and_bounds(k):
    """SpecTr: acceptance = 1 - (1 - beta(rho*))^k, <= the optimal k-draft acceptance, >= (1 - 1/e) OPT."""
    for seed in range(8):
        P, Q = make_pair(5, 2, seed, "random")
        p0, q0 = P.rows(torch.tensor(0), 0), Q.rows(torch.tensor(0), 0)
        got = _root_acceptance("spectr", P, Q, k)
        assert got == pytest.approx(kseq_acceptance(p0, q0, k).item(), abs=1e-9)
        opt = optimal_acceptance(p0, q0, k).item()
        assert (1 - 1 / math.e) * opt - 1e-12 <= got <= opt + 1e-12
        assert _root_acceptance("specinfer", P, Q, k) <= opt + 1e-12
