"""verispec.coupling.optimal: optimal k-draft acceptance (ALGORITHMS.md sections 3(b1), 7)."""

import math

import numpy as np
import pytest
import torch

from coupling_cases import random_pairs
from verispec.coupling import (
    kseq_acceptance,
    optimal_acceptance,
    optimal_acceptance_bruteforce,
    optimal_acceptance_lp,
    tv,
)

INSTANCES = [(p, q, 1 + i % 3) for i, (p, q) in enumerate(random_pairs(seed=7, n=48, v_lo=2, v_hi=6))]
# Peaked drafts with tiny tails (t q_i up to 1e12 inside the race integral) and k > support size.
HARD = [
    ([0.1, 0.2, 0.3, 0.4], [0.5, 0.5 - 2e-12, 1e-12, 1e-12], 3),
    ([0.3, 0.7], [1 - 1e-12, 1e-12], 2),
    ([0.25, 0.25, 0.25, 0.25], [1 - 1e-9, 2e-10, 3e-10, 5e-10], 3),
    ([0.1, 0.0, 0.5, 0.4, 0.0], [0.0, 0.6, 0.4, 0.0, 0.0], 3),
]
HARD = [(torch.tensor(p, dtype=torch.float64), torch.tensor(q, dtype=torch.float64), k) for p, q, k in HARD]


@pytest.mark.parametrize("replacement", [True, False])
def test_fast_equals_bruteforce_equals_lp(replacement):
    for p, q, k in INSTANCES + HARD:
        fast = float(optimal_acceptance(p, q, k, replacement))
        brute = float(optimal_acceptance_bruteforce(p, q, k, replacement))
        lp = float(optimal_acceptance_lp(p, q, k, replacement))
        assert abs(fast - brute) < 1e-9 and abs(brute - lp) < 1e-9, (p, q, k)


def test_sampling_mode_mismatch_is_caught():
    # Negative control: the two modes differ by far more than the 1e-9 tolerance on some instances.
    gaps = [float(optimal_acceptance_lp(p, q, k, False) - optimal_acceptance(p, q, k, True))
            for p, q, k in INSTANCES if k > 1]
    assert max(gaps) > 1e-2


def test_k1_is_one_minus_tv():
    for p, q, _ in INSTANCES:
        for replacement in (True, False):
            assert abs(float(optimal_acceptance(p, q, 1, replacement)) - (1 - float(tv(p, q)))) < 1e-14


def test_kseq_sandwich_and_replacement_order():
    for p, q, k in INSTANCES:
        opt = float(optimal_acceptance(p, q, k, True))
        kseq = float(kseq_acceptance(p, q, k))
        assert opt + 1e-12 >= kseq >= (1 - 1 / math.e) * opt - 1e-12
        # Hu et al.: drafting without replacement can only help (q(H)^k >= Pr_wo(all in H) for every H).
        assert float(optimal_acceptance(p, q, k, False)) >= opt - 1e-12


def test_k_exceeds_support_without_replacement():
    # q has support {1, 2}: with k = 3 both are always drafted, so alpha* = p({1, 2}).
    p, q, k = HARD[3]
    assert abs(float(optimal_acceptance(p, q, k, False)) - float(p[1] + p[2])) < 1e-12


def test_k2_closed_form_at_moderate_vocab():
    # For k = 2 without replacement, Pr(both in H) = sum_{x in H} q_x (q(H) - q_x) / (1 - q_x):
    # an independent O(V) evaluation on the same nested sets, at V = 3000 with a wide range of q.
    rng = np.random.default_rng(8)
    V = 3000
    p = torch.softmax(torch.tensor(rng.normal(size=V) * 3), -1)
    q = torch.softmax(torch.log(p) + torch.tensor(rng.normal(size=V) * 2), -1)
    order = torch.argsort(p / q)
    ps, qs = p[order], q[order]
    prefix = lambda x: torch.cat([x.new_zeros(1), x.cumsum(0)])  # noqa: E731  value on H_0..H_V
    both_in = prefix(qs) * prefix(qs / (1 - qs)) - prefix(qs**2 / (1 - qs))
    expected = float((prefix(ps) + 1 - both_in).min())
    assert abs(float(optimal_acceptance(p, q, 2, False)) - expected) < 1e-10


def test_batched_rows():
    ps = torch.stack([p for p, q, k in INSTANCES if p.numel() == 5])
    qs = torch.stack([q for p, q, k in INSTANCES if p.numel() == 5])
    for replacement in (True, False):
        out = optimal_acceptance(ps.view(-1, 1, 5), qs.view(-1, 1, 5), 3, replacement)
        assert out.shape == (ps.shape[0], 1)
        ref = optimal_acceptance_bruteforce(ps, qs, 3, replacement)
        assert torch.allclose(out.squeeze(1), ref, atol=1e-10, rtol=0)


def test_size_guards():
    p = torch.full((12,), 1 / 12, dtype=torch.float64)
    with pytest.raises(ValueError, match="too many"):
        optimal_acceptance_lp(p, p, 5)
    with pytest.raises(ValueError, match="too large"):
        optimal_acceptance_bruteforce(torch.full((40,), 1 / 40), torch.full((40,), 1 / 40), 2)
    with pytest.raises(ValueError, match="k"):
        optimal_acceptance(p, p, 0)
