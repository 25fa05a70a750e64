"""The achieved-vs-optimal analysis: exact rule acceptances, optimal >= every rule, and teeth.

* rrs_iid_acceptance (the closed form used for token / specinfer) equals the acceptance the
  SpecInfer verifier's own exact law gives, summed over every i.i.d. draft tuple (V = 4, k <= 3);
* at k = 1 token verification is optimal: expected == optimal == 1 - TV (Leviathan et al. 2023);
* the optimum is >= SpecInfer's and SpecTr's exact acceptance on random cases;
* a broken optimum (ignoring k) is caught as violations;
* the recorder's achieved frequency matches the exact acceptance (binomial bound).
"""
from __future__ import annotations

import itertools

import pytest
import torch

from verispec.bench.optimal_gap import (
    AcceptanceRecorder,
    RootRecord,
    expected_root_acceptance,
    optimal_root_acceptance,
    root_gap,
    rrs_iid_acceptance,
)
from verispec.coupling import optimal_acceptance
from verispec.noise import NoiseSource
from verispec.tree import DraftTree
from verispec.verify import get_verifier


def _laws(V: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(2 * torch.randn(n, V, generator=g, dtype=torch.float64), -1)
    q = torch.softmax(2 * torch.randn(n, V, generator=g, dtype=torch.float64), -1)
    return p, q


def _exact_specinfer_root(p: torch.Tensor, q: torch.Tensor, k: int) -> float:
    """Sum over all V^k i.i.d. first-token tuples of Q(tuple) * P(a first token accepted), from rule.law."""
    rule, V = get_verifier("specinfer"), p.shape[-1]
    total = 0.0
    for xs in itertools.product(range(V), repeat=k):
        tree = DraftTree.from_drafts(torch.tensor([[[x] for x in xs]]), q.expand(1, k, 1, V).clone(), "iid")
        law = rule.law(tree, p.expand(1, tree.num_nodes + 1, V).clone())  # [1, N + 1, V]
        total += float(torch.prod(q[list(xs)])) * float(law[0, 1:].sum())  # path ended below the root
    return total


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rrs_closed_form_matches_the_verifiers_law(k):
    p, q = _laws(4, 1, seed=k)
    assert float(rrs_iid_acceptance(p[0], q[0], k)) == pytest.approx(_exact_specinfer_root(p[0], q[0], k), abs=1e-12)


def test_token_is_optimal_at_k1_and_optimum_bounds_multi_draft_rules():
    p, q = _laws(6, 20, seed=0)
    for pr, qr in zip(p, q):
        one = RootRecord(pr.float(), qr.float(), [0], "iid", True)
        exact = 1 - 0.5 * float((pr - qr).abs().sum())
        assert expected_root_acceptance("token", one) == pytest.approx(exact, abs=1e-6)
        assert optimal_root_acceptance(one) == pytest.approx(exact, abs=1e-6)
        for k in (2, 4):
            rec = RootRecord(pr.float(), qr.float(), [0] * k, "iid", True)
            opt = optimal_root_acceptance(rec)
            for rule in ("specinfer", "spectr"):
                assert expected_root_acceptance(rule, rec) <= opt + 1e-6
            assert root_gap("specinfer", [rec]).violations == 0


def test_broken_optimum_is_caught():
    def ignores_k(p, q, k, replacement=True):
        return optimal_acceptance(p, q, 1, replacement)

    p, q = _laws(6, 20, seed=1)
    recs = [RootRecord(pr.float(), qr.float(), [0] * 4, "iid", True) for pr, qr in zip(p, q)]
    assert root_gap("specinfer", recs).violations == 0
    assert root_gap("specinfer", recs, optimal=ignores_k).violations > 0


def test_onehot_optimum_is_the_mass_of_the_drafted_tokens():
    p = torch.tensor([0.5, 0.3, 0.2])
    assert optimal_root_acceptance(RootRecord(p, None, [1, 1, 2], "onehot", False)) == pytest.approx(0.5)


def test_recorder_achieved_matches_exact_acceptance():
    """600 single-token drafts x ~ q verified by `token` through the recorder: achieved ~ 1 - TV."""
    p, q = _laws(5, 1, seed=3)
    rec = AcceptanceRecorder(get_verifier("token"))
    assert rec.name == "token" and rec.draft_kinds == get_verifier("token").draft_kinds
    g = torch.Generator().manual_seed(0)
    n = 600
    xs = torch.multinomial(q[0], n, replacement=True, generator=g)
    src = NoiseSource(7)
    for i, x in enumerate(xs.tolist()):
        tree = DraftTree.chain(torch.tensor([[x]]), q[None].clone(), "iid")
        rec(tree, p.expand(1, 2, 5).clone(), src.step(torch.tensor([i]), torch.tensor([0])))
    gap = root_gap("token", rec.take()).to_dict()
    exact = 1 - 0.5 * float((p - q).abs().sum())
    assert gap["calls"] == n and gap["expected"] == pytest.approx(exact, abs=1e-6)
    assert abs(gap["achieved"] - exact) < 4 * (exact * (1 - exact) / n) ** 0.5
    assert gap["optimal"] == pytest.approx(exact, abs=1e-6) and gap["violations"] == 0


def test_recorder_rejects_non_verifiers():
    with pytest.raises(ValueError, match="wraps a Verifier"):
        AcceptanceRecorder("token")
