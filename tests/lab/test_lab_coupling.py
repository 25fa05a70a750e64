"""lab coupling: exact formulas against simulation, the Pareto claim, and the table/plot writer."""
import numpy as np
import pytest
import torch

from verispec.coupling import gumbel_match_prob, tv, wmh_match_prob
from verispec.lab.coupling import Z_MAX, run, simulate_pair, z_score
from verispec.lab.pairs import lump_top, random_pairs


def test_simulation_matches_exact_formulas():
    rng, gen = np.random.default_rng(1), torch.Generator().manual_seed(1)
    P, Q = random_pairs(6, 8, rng, alpha=0.5)
    n = 20000
    for i in range(6):
        g, w = simulate_pair(P[i], Q[i], n, gen)
        assert z_score(np.array([g]), gumbel_match_prob(P[i], Q[i]).numpy(), n)[0] <= Z_MAX
        assert z_score(np.array([w]), wmh_match_prob(P[i], Q[i]).numpy(), n)[0] <= Z_MAX


def test_check_has_teeth_against_a_wrong_formula():
    # the same z-test rejects "Gumbel reaches 1 - TV" on a pair far from equality
    P = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    Q = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    g, _ = simulate_pair(P, Q, 20000, torch.Generator().manual_seed(0))
    assert z_score(np.array([g]), (1 - tv(P, Q)).numpy(), 20000)[0] > Z_MAX


def test_gumbel_at_least_wmh_on_every_pair():
    rng = np.random.default_rng(2)
    for V, alpha in ((2, 1.0), (10, 0.3), (50, 0.1), (200, 1.0)):
        P, Q = random_pairs(200, V, rng, alpha=alpha)
        assert bool((gumbel_match_prob(P, Q) >= wmh_match_prob(P, Q) - 1e-12).all())


def test_lump_top_keeps_mass():
    rng = np.random.default_rng(3)
    P, Q = random_pairs(4, 30, rng)
    Pl, Ql = lump_top(P, Q, 5)
    assert Pl.shape == (4, 6) and torch.allclose(Pl.sum(-1), torch.ones(4, dtype=torch.float64))
    assert torch.allclose(Ql.sum(-1), torch.ones(4, dtype=torch.float64))
    with pytest.raises(ValueError):
        lump_top(P, Q, 0)


def test_run_writes_tables_and_plot(tmp_path):
    res = run(str(tmp_path), seed=0, quick=True, n_pairs=6, real=False, show_progress=False)
    assert res["ok"] and res["pareto_violations"] == 0
    for f in ("coupling.csv", "coupling.md", "coupling.png", "coupling_pairs.csv"):
        assert (tmp_path / f).stat().st_size > 0
