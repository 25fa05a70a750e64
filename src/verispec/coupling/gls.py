"""Gumbel-max list sampling (GLS): one target sample coupled with K draft samples.

Rowan, Phan, Khisti, "Gumbel-max List Sampling for Distribution Coupling with Multiple Samples"
(v1: "List-Level Distribution Coupling ..."), arXiv 2506.05632, Algorithm 1; ALGORITHMS.md section 6.
Notation converted to this project's: p = target, q = draft (the paper swaps them).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._validate import _check_broadcasts_to, _check_dist, _check_pair
from .comm_free import _race, _ratio_max_sums


def gls_sample(p: Tensor, q: Tensor, E: Tensor) -> tuple[Tensor, Tensor]:
    """GLS (arXiv 2506.05632, Algorithm 1): ``Y = argmin_i min_k E[k,i] / p_i``, ``X[k] = argmin_i E[k,i] / q[k,i]``.

    ``Y ~ p`` (the row minima ``min_k E[k, i]`` are i.i.d. Exp(K)), and the ``X[k]`` are independent with
    ``X[k] ~ q`` (Proposition 1) or ``X[k] ~ q[k]`` for K different drafters (Proposition 5).
    Drafts are accepted iff ``Y in {X[1..K]}``.

    p: [..., V] target (broadcast to E's batch); q: [..., V] one drafter (same ndim as p), or
    [..., K, V] K drafters (one more dim than p); both broadcast to E; E: [..., K, V] i.i.d. Exp(1)
    noise, strictly positive.
    Returns ``(Y, X)``: Y [...] int64 and X [..., K] int64.
    """
    p, q, E = _check_dist("p", p), _check_dist("q", q), _check_dist("E", E, min_dim=2, positive=True)
    _check_broadcasts_to("p", p, E.shape[:-2] + E.shape[-1:], "E without its K dim")
    if q.dim() == p.dim():
        q = q.unsqueeze(-2)  # same drafter for every row k
    _check_broadcasts_to("q", q, E.shape, "E")
    Y = _race(p, E.amin(-2))
    X = _race(q, E)
    return Y, X


def list_matching_bound(p: Tensor, q: Tensor, K: int) -> Tensor:
    """List-matching lower bound on the GLS acceptance ``Pr[Y in {X[1..K]}]`` (arXiv 2506.05632, Theorem 1).

    ``Pr[accept] >= sum_j K / (sum_i max(p_i/p_j, q_i/q_j) + (K - 1)/p_j)``; terms with ``p_j = 0`` or
    ``q_j = 0`` contribute 0. This is the *derived* form of ALGORITHMS.md section 6 (the printed formula was not
    decoded): it is exact for K = 1 (the Gumbel match probability of arXiv 2408.07978), for a point-mass
    q, and for ``p = q``; as K grows it tends to ``p(supp q)`` (1 when q covers p's support).
    Same drafter q for all K drafts.

    p: [..., V] target; q: [..., V] draft; K: number of drafts (int >= 1). Returns [...].
    """
    p, q = _check_pair("p", p, "q", q)
    if int(K) != K or K < 1:
        raise ValueError("K must be an integer >= 1")
    S = _ratio_max_sums(p, q)  # [..., V], inf where p_j = 0 or q_j = 0
    extra = torch.where(p > 0, (K - 1) / torch.where(p > 0, p, 1.0), 0.0)
    return (K / (S + extra)).sum(-1)
