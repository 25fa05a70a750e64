"""Maximal coupling of one draft and one target distribution (token-level speculative sampling).

Leviathan, Kalman, Matias (2023) and Chen et al. (2023); ALGORITHMS.md section 1. Notation:
``p`` = target, ``q`` = draft, both ``[..., V]`` probability vectors (last dim = vocabulary).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._validate import _check_dist, _check_pair

# Below this mass the residual is treated as empty (it then has probability 0 of being used).
_TINY_MASS = 1e-300


def tv(p: Tensor, q: Tensor) -> Tensor:
    """Total variation ``TV(p, q) = 1/2 sum_x |p(x) - q(x)|`` over the last dim (ALGORITHMS.md section 0).

    p: [..., V] target; q: [..., V] draft. Returns [...].
    """
    p, q = _check_pair("p", p, "q", q)
    return 0.5 * (p - q).abs().sum(-1)


def overlap(p: Tensor, q: Tensor) -> Tensor:
    """Overlap ``sum_x min(p(x), q(x)) = 1 - TV(p, q)``: the acceptance of speculative sampling.

    ALGORITHMS.md section 1(c). p: [..., V]; q: [..., V]. Returns [...].
    """
    p, q = _check_pair("p", p, "q", q)
    return torch.minimum(p, q).sum(-1)


def residual(p: Tensor, q: Tensor, w: Tensor | float | None = None) -> tuple[Tensor, Tensor]:
    """Residual ("recovery") law ``norm((w p - q)+)`` and its mass (ALGORITHMS.md section 1(b)).

    p: [..., V]; q: [..., V]; w: [...] non-negative weight on p (broadcast; default 1).
    Returns ``(r, mass)`` with r: [..., V] and mass = ``sum_x max(w p(x) - q(x), 0)``: [...].

    Where ``mass <= 1e-300`` (e.g. ``p == q``, or ``w p <= q`` everywhere) the residual is empty; r is
    then set to ``p / sum p`` as a safe, NaN-free fallback. In exact arithmetic such a row is never
    sampled: speculative sampling reaches the residual with probability ``mass`` = 0.
    """
    p, q = _check_pair("p", p, "q", q)
    return residual_unchecked(p, q, None if w is None else _check_dist("w", w, min_dim=0))


def residual_unchecked(p: Tensor, q: Tensor, w: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """`residual` without input checks, for callers that validated p and q once (the verifiers' hot path)."""
    wp = p if w is None else w.unsqueeze(-1) * p
    v = (wp - q).clamp_min(0.0)  # [..., V]
    mass = v.sum(-1)  # [...]
    ok = mass > _TINY_MASS
    r = torch.where(ok.unsqueeze(-1), v / torch.where(ok, mass, 1.0).unsqueeze(-1), p / p.sum(-1, keepdim=True))
    return r, mass


def maximal_coupling(p: Tensor, q: Tensor) -> Tensor:
    """Joint law ``pi(x, y)`` of draft ``x ~ q`` and output ``y ~ p`` under speculative sampling.

    ALGORITHMS.md section 1(c): ``pi = diag(min(p, q)) + (q - p)+ (outer) (p - q)+ / TV``, i.e. accept x
    with probability ``min(1, p/q)``, else draw y from the residual. Its diagonal mass is ``1 - TV``,
    the largest any coupling can reach, so this is a maximal coupling.

    p: [..., V] target; q: [..., V] draft. Returns pi: [..., V, V], indexed ``[..., x, y]``.
    """
    p, q = _check_pair("p", p, "q", q)
    r, _ = residual(p, q)  # norm((p - q)+); the fallback row is multiplied by (q - p)+ = 0
    reject = (q - p).clamp_min(0.0)  # [..., V]: draft mass that is rejected at x
    return torch.diag_embed(torch.minimum(p, q)) + reject.unsqueeze(-1) * r.unsqueeze(-2)
