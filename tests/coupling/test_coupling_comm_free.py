"""verispec.coupling.comm_free: Gumbel / weighted-MinHash coupling without communication (section 5)."""

import numpy as np
import pytest
import torch

from coupling_cases import P_MIN, law_pvalue, random_pairs, within_5se
from verispec.coupling import (
    gumbel_coupled_sample,
    gumbel_match_prob,
    match_lower_bound,
    race_argmin,
    tight_lower_bound,
    wmh_coupled_sample,
    wmh_match_prob,
)

N = 200_000
PAIRS = random_pairs(seed=2, n=200, v_lo=2, v_hi=10)
# MC instances: three hand-made pairs (zeros in both P and Q) and three random pairs with zeros.
MC_PAIRS = [
    (torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
    for a, b in [
        ([0.5, 0.2, 0.0, 0.3, 0.0], [0.1, 0.4, 0.3, 0.2, 0.0]),
        ([0.05, 0.05, 0.6, 0.3, 0.0, 0.0], [0.3, 0.0, 0.1, 0.2, 0.25, 0.15]),
        ([0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]),
    ]
] + random_pairs(seed=12, n=3, v_lo=4, v_hi=8)


def separated(x, y):
    """True when two exact probabilities differ by more than 10 standard errors at N draws."""
    return abs(x - y) > 10 * (max(x * (1 - x), y * (1 - y)) / N) ** 0.5

def naive_gumbel(P, Q):
    """sum_x 1 / sum_y max(P_y/P_x, Q_y/Q_x), by the V x V double loop of the formula."""
    P, Q = P.numpy(), Q.numpy()
    return sum(1.0 / sum(max(P[y] / P[x], Q[y] / Q[x]) for y in range(P.size))
               for x in range(P.size) if P[x] > 0 and Q[x] > 0)


def test_negative_controls_are_active():
    # The hand-made MC pairs are chosen so that Gumbel and WMH differ by > 10 standard errors.
    assert all(separated(float(gumbel_match_prob(P, Q)), float(wmh_match_prob(P, Q))) for P, Q in MC_PAIRS[:3])


def test_gumbel_formula_matches_naive_double_sum():
    for P, Q in PAIRS:
        assert abs(float(gumbel_match_prob(P, Q)) - naive_gumbel(P, Q)) < 1e-13
    batch = torch.stack([P for P, _ in PAIRS if P.numel() == 7]), torch.stack([Q for P, Q in PAIRS if P.numel() == 7])
    assert torch.allclose(gumbel_match_prob(*batch), torch.tensor([naive_gumbel(P, Q) for P, Q in zip(*batch)]))


def test_ordering_gumbel_wmh_bounds():
    for P, Q in PAIRS:
        g, w = float(gumbel_match_prob(P, Q)), float(wmh_match_prob(P, Q))
        t, lb = float(tight_lower_bound(P, Q)), float(match_lower_bound(P, Q))
        tv = 0.5 * float((P - Q).abs().sum())
        assert g >= w - 1e-12 and w >= t - 1e-12 and t >= lb - 1e-12
        assert g <= 1 - tv + 1e-12 and lb >= 1 - 2 * tv - 1e-12


@pytest.mark.parametrize("i", range(len(MC_PAIRS)))
def test_gumbel_monte_carlo(i):
    P, Q = MC_PAIRS[i]
    g = torch.Generator().manual_seed(10 + i)
    u = torch.rand(N, P.numel(), dtype=torch.float64, generator=g).clamp_min(1e-300)
    a, b = gumbel_coupled_sample(P, Q, u)
    rate = float((a == b).double().mean())
    assert within_5se(rate, float(gumbel_match_prob(P, Q)), N)
    assert law_pvalue(a, P) > P_MIN and law_pvalue(b, Q) > P_MIN
    # Negative control: where the two formulas are far apart, the estimate rejects the wrong one.
    w = float(wmh_match_prob(P, Q))
    assert not separated(float(gumbel_match_prob(P, Q)), w) or not within_5se(rate, w, N)


@pytest.mark.parametrize("i", range(len(MC_PAIRS)))
@pytest.mark.parametrize("n_darts", [64, 1])  # 1 dart per round exercises the continuation rounds
def test_wmh_monte_carlo(i, n_darts):
    P, Q = MC_PAIRS[i]
    a, b = wmh_coupled_sample(P.expand(N, -1), Q.expand(N, -1), torch.Generator().manual_seed(20 + i), n_darts)
    assert a.shape == (N,)
    rate = float((a == b).double().mean())
    assert within_5se(rate, float(wmh_match_prob(P, Q)), N)
    assert law_pvalue(a, P) > P_MIN and law_pvalue(b, Q) > P_MIN
    gm = float(gumbel_match_prob(P, Q))
    assert not separated(gm, float(wmh_match_prob(P, Q))) or not within_5se(rate, gm, N)


def test_race_argmin_marginal():
    P = MC_PAIRS[1][0]
    E = torch.empty(N, P.numel(), dtype=torch.float64).exponential_(generator=torch.Generator().manual_seed(3))
    assert law_pvalue(race_argmin(P, E), P) > P_MIN
    # Negative controls: a wrong race (E * P) or sampling from unnormalised-log weights is caught.
    assert law_pvalue((E * P).argmin(-1), P) < P_MIN
    assert law_pvalue(race_argmin(P.sqrt(), E), P) < P_MIN


def test_race_argmin_zeros_ties_and_large_vocab():
    P = torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64)
    E = torch.tensor([[1e-300, 2.0, 2.0], [1e-300, 3.0, 1.0]], dtype=torch.float64)
    assert race_argmin(P, E).tolist() == [1, 2]  # P = 0 never wins; tie goes to the lowest index
    V = 49152
    g = torch.Generator().manual_seed(4)
    P = torch.rand(8, V, dtype=torch.float64, generator=g)
    P[:, ::2] = 0.0
    E = torch.empty(8, V, dtype=torch.float64).exponential_(generator=g)
    idx = race_argmin(P, E)
    assert idx.shape == (8,) and bool((idx % 2 == 1).all())
    assert torch.equal(idx, (torch.log(P) - torch.log(E)).argmax(-1))  # Gumbel-max form


def test_validation():
    P = torch.tensor([0.5, 0.5], dtype=torch.float64)
    with pytest.raises(ValueError, match="u"):
        gumbel_coupled_sample(P, P, torch.tensor([0.5, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="E"):
        race_argmin(P, torch.tensor([0.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        race_argmin(P, torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="Q"):
        gumbel_match_prob(P, torch.tensor([np.nan, 1.0]))
    with pytest.raises(ValueError, match="positive mass"):
        wmh_coupled_sample(P, torch.zeros(2, dtype=torch.float64), torch.Generator())
