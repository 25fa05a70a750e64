"""verispec.coupling.kseq: SpecTr K-SEQ (ALGORITHMS.md section 3(b2)), checked by exact enumeration."""

import itertools
import math

import pytest
import torch

from coupling_cases import random_pairs
from verispec.coupling import kseq_acceptance, kseq_beta, kseq_residual, kseq_rho, overlap

PAIRS = random_pairs(seed=6, n=60, v_lo=2, v_hi=5)


def kseq_exact(p, q, k, rho):
    """Exact (output law, acceptance) of the sequential K-SEQ procedure, enumerating all k-tuples.

    Candidate x is accepted w.p. min(1, p(x) / (rho q(x))); after k rejections the output is drawn
    from kseq_residual. Independent of kseq_beta / kseq_acceptance.
    """
    V = p.numel()
    a = [min(1.0, float(p[x]) / (rho * float(q[x]))) if q[x] > 0 else 0.0 for x in range(V)]
    r, _ = kseq_residual(p, q, rho, k)
    law, accept = torch.zeros(V, dtype=torch.float64), 0.0
    for xs in itertools.product(range(V), repeat=k):
        prob = float(torch.prod(q[list(xs)]))
        if prob == 0:
            continue
        alive = 1.0
        for x in xs:
            law[x] += prob * alive * a[x]
            alive *= 1.0 - a[x]
        law += prob * alive * r
        accept += prob * (1.0 - alive)
    return law, accept


def f(p, q, rho, k):
    """f(rho) = (1 - (1 - beta)^k) / beta, evaluated stably."""
    beta = float(kseq_beta(p, q, rho))
    return 1.0 if beta >= 1 else -math.expm1(k * math.log1p(-beta)) / beta


@pytest.mark.parametrize("k", [1, 2, 3])
def test_procedure_is_lossless_and_acceptance_matches(k):
    for p, q in PAIRS[:20]:
        rho = float(kseq_rho(p, q, k))
        law, acc = kseq_exact(p, q, k, rho)
        assert float((law - p).abs().max()) < 1e-12
        assert abs(acc - float(kseq_acceptance(p, q, k))) < 1e-9


def test_wrong_rho_is_caught():
    # Negative control: rho = 1 with k = 3 (plain per-candidate speculative sampling, no correction)
    # is not lossless on these instances; the exact law check sees it.
    errors = [float((kseq_exact(p, q, 3, 1.0)[0] - p).abs().max()) for p, q in PAIRS[:20]]
    assert max(errors) > 1e-2


@pytest.mark.parametrize("k", [2, 3, 8])
def test_rho_is_smallest_valid(k):
    for p, q in PAIRS:
        rho = float(kseq_rho(p, q, k))
        assert 1.0 <= rho <= k
        if float(kseq_beta(p, q, 1.0)) == 0:
            assert rho == 1.0
            continue
        assert f(p, q, rho, k) <= rho * (1 + 1e-13)
        beta = float(kseq_beta(p, q, rho))
        unclipped = p - f(p, q, rho, k) * torch.minimum(q, p / rho)  # residual before clipping
        assert float(unclipped.min()) >= -1e-13
        r, mass = kseq_residual(p, q, rho, k)
        assert bool((r >= 0).all()) and abs(float(mass) - (1 - rho * beta)) < 1e-9
        assert abs(float(mass) - (1 - beta) ** k) < 1e-12  # the general form's mass
        if rho > 1 + 1e-9:
            below = rho * (1 - 1e-7)
            assert f(p, q, below, k) > below


def test_k1_and_special_cases():
    for p, q in PAIRS:
        assert float(kseq_rho(p, q, 1)) == 1.0
        assert abs(float(kseq_acceptance(p, q, 1)) - float(overlap(p, q))) < 1e-14
    p = torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=torch.float64)
    q = torch.tensor([0.0, 0.0, 0.3, 0.7], dtype=torch.float64)  # disjoint supports: beta = 0
    assert float(kseq_rho(p, q, 4)) == 1.0 and float(kseq_acceptance(p, q, 4)) == 0.0
    r, mass = kseq_residual(p, q, 1.0, 4)
    assert torch.equal(r, p) and abs(float(mass) - 1.0) < 1e-15
    assert abs(float(kseq_acceptance(p, p, 3)) - 1.0) < 1e-12  # p = q


def test_batched_per_row_k():
    ps = torch.stack([p for p, _ in PAIRS if p.numel() == 4])
    qs = torch.stack([q for p, q in PAIRS if p.numel() == 4])
    ks = torch.arange(ps.shape[0]) % 5 + 1
    rho = kseq_rho(ps, qs, ks)
    acc = kseq_acceptance(ps, qs, ks)
    for b in range(ps.shape[0]):
        # bisection stops at relative width 1e-10; a row in a batch may be bisected further
        assert abs(float(rho[b]) - float(kseq_rho(ps[b], qs[b], int(ks[b])))) <= 2e-10 * float(rho[b])
        assert abs(float(acc[b]) - float(kseq_acceptance(ps[b], qs[b], int(ks[b])))) <= 1e-9


def test_validation():
    p, q = PAIRS[0]
    with pytest.raises(ValueError, match="k"):
        kseq_rho(p, q, 0)
    with pytest.raises(ValueError, match="k"):
        kseq_acceptance(p, q, 1.5)
    with pytest.raises(ValueError, match="rho"):
        kseq_residual(p, q, float("nan"), 2)
