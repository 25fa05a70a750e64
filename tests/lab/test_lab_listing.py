"""lab list: SpecInfer's exact acceptance, GLS between the list-matching bound and the optimum."""
import itertools

import numpy as np
import pytest
import torch

from verispec.coupling import (
    gumbel_match_prob,
    list_matching_bound,
    optimal_acceptance,
    tv,
)
from verispec.lab.listing import Z_MAX, gls_acceptance_mc, run, specinfer_acceptance
from verispec.lab.pairs import random_pairs


def _rrs_enumerated(p, q, K):
    """SpecInfer with K iid drafts by enumerating every draft tuple (independent reference)."""
    total = 0.0
    for xs in itertools.product(range(len(p)), repeat=K):
        pi, acc, miss = p.copy(), 0.0, 1.0
        for x in xs:
            a = min(1.0, pi[x] / q[x]) if q[x] > 0 else 0.0
            acc += miss * a
            miss *= 1 - a
            r = np.maximum(pi - q, 0)
            pi = r / r.sum() if r.sum() > 0 else pi
        total += np.prod(q[list(xs)]) * acc
    return total


def test_specinfer_acceptance_exact():
    rng = np.random.default_rng(0)
    p, q = random_pairs(3, 4, rng, mix=False)
    for i in range(3):
        assert float(specinfer_acceptance(p[i], q[i], 1)) == pytest.approx(1 - float(tv(p[i], q[i])), abs=1e-12)
        for K in (2, 3):
            assert float(specinfer_acceptance(p[i], q[i], K)) == pytest.approx(
                _rrs_enumerated(p[i].numpy(), q[i].numpy(), K), abs=1e-10)
    with pytest.raises(ValueError):
        specinfer_acceptance(p[0], q[0], 0)


def test_gls_between_bound_and_optimum():
    rng, gen = np.random.default_rng(1), torch.Generator().manual_seed(1)
    p, q = random_pairs(8, 10, rng, mix=False)
    n = 4000
    for i in range(8):
        g = gls_acceptance_mc(p[i], q[i], 6, n, gen).numpy()
        se = np.sqrt(np.maximum(g * (1 - g), 0.5 / n) / n)
        lml = np.array([float(list_matching_bound(p[i], q[i], K)) for K in range(1, 7)])
        opt = np.array([float(optimal_acceptance(p[i], q[i], K)) for K in range(1, 7)])
        assert (g >= lml - Z_MAX * se).all() and (g <= opt + Z_MAX * se).all()
        assert abs(g[0] - float(gumbel_match_prob(p[i], q[i]))) <= Z_MAX * se[0]  # K = 1 is Daliri's Gumbel
        assert (np.diff(g) >= 0).all()  # nested noise rows: monotone in K


def test_run_quick_no_violations(tmp_path):
    res = run(str(tmp_path), seed=0, quick=True, n_pairs=5, real=False, show_progress=False, K_max=6)
    assert res["violations"] == {"below_bound": 0, "above_optimal": 0, "bound_above_optimal": 0}
    assert (tmp_path / "list.png").exists() and (tmp_path / "list.md").exists()
