"""verispec.coupling.gls: Gumbel-max list sampling and the list-matching bound (ALGORITHMS.md section 6)."""

import pytest
import torch

from coupling_cases import P_MIN, law_pvalue, random_pairs, within_5se
from verispec.coupling import gls_sample, gumbel_match_prob, list_matching_bound

N = 200_000
P = torch.tensor([0.35, 0.05, 0.0, 0.3, 0.2, 0.1], dtype=torch.float64)
Q = torch.tensor([0.1, 0.3, 0.25, 0.0, 0.15, 0.2], dtype=torch.float64)


def noise(K, seed, V=6):
    return torch.empty(N, K, V, dtype=torch.float64).exponential_(generator=torch.Generator().manual_seed(seed))


def acceptance(Y, X):
    return float((X == Y.unsqueeze(-1)).any(-1).double().mean())


def naive_bound(p, q, K):
    """sum_j K / (sum_i max(p_i/p_j, q_i/q_j) + (K-1)/p_j), by the double loop."""
    p, q = p.tolist(), q.tolist()
    return sum(K / (sum(max(p[i] / p[j], q[i] / q[j]) for i in range(len(p))) + (K - 1) / p[j])
               for j in range(len(p)) if p[j] > 0 and q[j] > 0)


@pytest.mark.parametrize("K", [1, 2, 4])
def test_marginals_and_bound(K):
    Y, X = gls_sample(P, Q, noise(K, seed=K))
    assert Y.shape == (N,) and X.shape == (N, K)
    assert law_pvalue(Y, P) > P_MIN
    for k in range(K):
        assert law_pvalue(X[:, k], Q) > P_MIN
    bound = float(list_matching_bound(P, Q, K))
    assert abs(bound - naive_bound(P, Q, K)) < 1e-13
    acc = acceptance(Y, X)
    assert acc >= bound - 5 * (bound * (1 - bound) / N) ** 0.5
    if K == 1:  # exact for K = 1: Daliri et al.'s Gumbel coupling
        assert abs(bound - float(gumbel_match_prob(P, Q))) < 1e-15
        assert within_5se(acc, bound, N)


def test_shared_noise_rows_are_caught():
    # Negative control: reusing one noise row for all K drafts collapses GLS to K = 1,
    # which falls clearly below the K = 4 bound.
    E = noise(1, seed=7).expand(N, 4, 6)
    Y, X = gls_sample(P, Q, E)
    bound = float(list_matching_bound(P, Q, 4))
    assert acceptance(Y, X) < bound - 5 * (bound * (1 - bound) / N) ** 0.5


@pytest.mark.parametrize("K", [1, 2, 4])
def test_equality_cases(K):
    # Point-mass draft: X is always j0, so Pr[accept] = p(j0) exactly; p = q: always accepted.
    point = torch.zeros(6, dtype=torch.float64)
    point[3] = 1.0
    Y, X = gls_sample(P, point, noise(K, seed=30 + K))
    assert bool((X == 3).all())
    bound = float(list_matching_bound(P, point, K))
    assert abs(bound - float(P[3])) < 1e-15 and within_5se(acceptance(Y, X), bound, N)
    Y, X = gls_sample(P, P, noise(K, seed=40 + K))
    assert acceptance(Y, X) == 1.0 and abs(float(list_matching_bound(P, P, K)) - 1.0) < 1e-14


def test_different_drafters():
    q2 = torch.stack([Q, P.flip(0)])  # [K=2, V]: Proposition 5
    Y, X = gls_sample(P, q2, noise(2, seed=50))
    assert law_pvalue(Y, P) > P_MIN
    assert law_pvalue(X[:, 0], q2[0]) > P_MIN and law_pvalue(X[:, 1], q2[1]) > P_MIN
    assert law_pvalue(X[:, 1], Q) < P_MIN  # the second row really follows its own drafter


def test_bound_random_pairs_and_limits():
    for p, q in random_pairs(seed=5, n=60, v_lo=2, v_hi=8):
        b = [float(list_matching_bound(p, q, K)) for K in (1, 2, 4, 64)]
        assert abs(b[0] - float(gumbel_match_prob(p, q))) < 1e-13
        assert all(x <= y + 1e-12 for x, y in zip(b, b[1:]))  # grows with K
        assert abs(b[2] - naive_bound(p, q, 4)) < 1e-12
        assert b[-1] <= float(p[q > 0].sum()) + 1e-12  # -> p(supp q) as K grows


def test_validation():
    with pytest.raises(ValueError, match="shape"):
        gls_sample(P, Q, torch.ones(4, 2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="E"):
        gls_sample(P, Q, torch.ones(6, dtype=torch.float64))
    with pytest.raises(ValueError, match="K"):
        list_matching_bound(P, Q, 0)
