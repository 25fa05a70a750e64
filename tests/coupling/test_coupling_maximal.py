"""verispec.coupling.maximal: TV, overlap, residual, maximal coupling (ALGORITHMS.md section 1)."""

import pytest
import torch

from coupling_cases import random_pairs
from verispec.coupling import maximal_coupling, overlap, residual, tv

PAIRS = random_pairs(seed=1, n=100, v_lo=2, v_hi=8)


def marginal_error(pi, p, q):
    """Largest deviation of pi's draft (rows) and target (columns) marginals from q and p."""
    return max(float((pi.sum(-1) - q).abs().max()), float((pi.sum(-2) - p).abs().max()))


@pytest.mark.parametrize("i", range(0, 100, 7))
def test_marginals_exact_and_acceptance_is_one_minus_tv(i):
    p, q = PAIRS[i]
    pi = maximal_coupling(p, q)
    assert pi.shape == (p.numel(), p.numel())
    assert bool((pi >= 0).all())
    assert marginal_error(pi, p, q) < 1e-14
    assert abs(float(torch.diagonal(pi).sum()) - (1 - float(tv(p, q)))) < 1e-14
    assert abs(float(overlap(p, q)) - (1 - float(tv(p, q)))) < 1e-14


def test_wrong_coupling_is_caught():
    # Negative control: outer((q-p)+, p) instead of the residual breaks the target marginal.
    p, q = PAIRS[3]
    wrong = torch.diag_embed(torch.minimum(p, q)) + (q - p).clamp_min(0).unsqueeze(-1) * p.unsqueeze(-2)
    assert marginal_error(wrong, p, q) > 1e-3


def test_batched_matches_rows():
    p = torch.stack([PAIRS[i][0] for i in range(100) if PAIRS[i][0].numel() == 5])
    q = torch.stack([PAIRS[i][1] for i in range(100) if PAIRS[i][1].numel() == 5])
    pi = maximal_coupling(p, q)
    for b in range(p.shape[0]):
        assert torch.allclose(pi[b], maximal_coupling(p[b], q[b]), atol=0, rtol=0)
    assert torch.allclose(tv(p, q), torch.stack([tv(a, c) for a, c in zip(p, q)]))


def test_residual_values_and_weight():
    p, q = PAIRS[5]
    r, mass = residual(p, q)
    v = (p - q).clamp_min(0)
    assert abs(float(mass) - float(v.sum())) < 1e-15 and torch.allclose(r, v / v.sum())
    w = torch.tensor([0.5, 2.0], dtype=torch.float64)
    r2, mass2 = residual(p.expand(2, -1), q.expand(2, -1), w)
    for b in range(2):
        v = (w[b] * p - q).clamp_min(0)
        assert abs(float(mass2[b]) - float(v.sum())) < 1e-15
        if float(v.sum()) > 0:
            assert torch.allclose(r2[b], v / v.sum())


@pytest.mark.parametrize("case", ["equal", "dominated", "tiny"])
def test_residual_zero_mass_fallback_no_nan(case):
    p = torch.tensor([1e-305, 0.5, 0.5], dtype=torch.float64)
    q = {"equal": p, "dominated": p, "tiny": torch.tensor([9e-306, 0.5, 0.5], dtype=torch.float64)}[case]
    r, mass = residual(p, q, 0.5 if case == "dominated" else None)
    assert (float(mass) > 0) == (case == "tiny")  # "tiny": positive mass 1e-306, below the 1e-300 cut
    assert float(mass) <= 1e-300
    assert not bool(r.isnan().any())
    assert torch.equal(r, p / p.sum())
    pi = maximal_coupling(p, p)
    assert torch.equal(pi, torch.diag(p))


@pytest.mark.parametrize(
    "p, q, name",
    [
        ([0.5, float("nan")], [0.5, 0.5], "p"),
        ([0.5, 0.5], [1.5, -0.5], "q"),
        ([0.5, float("inf")], [0.5, 0.5], "p"),
        ([0.5, 0.5], [0.2, 0.3, 0.5], "shape"),
    ],
)
def test_validation(p, q, name):
    for fn in (tv, overlap, maximal_coupling, residual):
        with pytest.raises(ValueError, match=name):
            fn(torch.tensor(p, dtype=torch.float64), torch.tensor(q, dtype=torch.float64))
