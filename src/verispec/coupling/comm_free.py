"""Coupling without communication: Gumbel (exponential race) and weighted MinHash.

Daliri, Musco, Suresh, "Coupling without Communication and Drafter-Invariant Speculative Decoding",
arXiv 2408.07978 (ISIT 2025); ALGORITHMS.md section 5. Alice holds P and outputs ``a ~ P``, Bob holds Q
and outputs ``b ~ Q``; they share random numbers but do not communicate. All P, Q: [..., V]
probability vectors (last dim = vocabulary), float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._validate import _check_broadcasts_to, _check_dist, _check_pair

_INF = float("inf")


def _ratio_max_sums(P: Tensor, Q: Tensor) -> Tensor:
    """``S_x = sum_y max(P_y / P_x, Q_y / Q_x)`` in O(V log V); ``inf`` where ``P_x = 0`` or ``Q_x = 0``.

    P, Q: [..., V] (already validated). Returns S: [..., V].
    ``P_y/P_x >= Q_y/Q_x`` iff ``P_y/Q_y >= P_x/Q_x``, so after sorting tokens by ``r = P/Q``,
    ``S_x = (sum of P over r_y >= r_x) / P_x + (sum of Q over r_y < r_x) / Q_x``. Tied ratios may fall
    on either side: both terms are then equal. Tokens with ``Q_y = 0`` get ``r = inf`` (P side).
    """
    r = torch.where(Q > 0, P / Q, _INF)
    order = torch.sort(r, dim=-1).indices
    Ps, Qs = P.gather(-1, order), Q.gather(-1, order)
    p_tail = Ps.flip(-1).cumsum(-1).flip(-1)  # sum_{l >= i} Ps[l]
    q_head = Qs.cumsum(-1) - Qs  # sum_{l < i} Qs[l]
    valid = (Ps > 0) & (Qs > 0)
    S_sorted = torch.where(valid, p_tail / torch.where(valid, Ps, 1.0) + q_head / torch.where(valid, Qs, 1.0), _INF)
    return torch.empty_like(S_sorted).scatter_(-1, order, S_sorted)


def gumbel_match_prob(P: Tensor, Q: Tensor) -> Tensor:
    """Exact ``Pr[a = b]`` of the Gumbel / exponential-race coupling (arXiv 2408.07978; ALGORITHMS.md section 5(c)).

    ``Pr[a = b] = sum_x 1 / sum_y max(P_y/P_x, Q_y/Q_x)``; terms with ``P_x = 0`` or ``Q_x = 0`` are 0.
    Computed in O(V log V) by sorting on ``P/Q``. P: [..., V]; Q: [..., V]. Returns [...].
    """
    P, Q = _check_pair("P", P, "Q", Q)
    return _ratio_max_sums(P, Q).reciprocal().sum(-1)


def wmh_match_prob(P: Tensor, Q: Tensor) -> Tensor:
    """Exact ``Pr[a = b]`` of weighted MinHash (dart throwing) (arXiv 2408.07978; ALGORITHMS.md section 5(c)).

    ``Pr[a = b] = sum_x [min(P_x,Q_x) + (P_x-Q_x)+ Q_x + (Q_x-P_x)+ P_x] / sum_y max(P_y, Q_y)``: the first
    dart in the union region hits the intersection, or hits only one side at x and the other side's
    first hit (a fresh draw with law Q resp. P) is x again. P: [..., V]; Q: [..., V]. Returns [...].
    """
    P, Q = _check_pair("P", P, "Q", Q)
    m = torch.minimum(P, Q)
    num = m + (P - Q).clamp_min(0.0) * Q + (Q - P).clamp_min(0.0) * P
    return num.sum(-1) / torch.maximum(P, Q).sum(-1)


def match_lower_bound(P: Tensor, Q: Tensor) -> Tensor:
    """Worst-case guarantee ``(1 - TV) / (1 + TV)`` of both protocols (arXiv 2408.07978, abstract; section 5(c)).

    P: [..., V]; Q: [..., V]. Returns [...].
    """
    P, Q = _check_pair("P", P, "Q", Q)
    t = 0.5 * (P - Q).abs().sum(-1)
    return (1.0 - t) / (1.0 + t)


def tight_lower_bound(P: Tensor, Q: Tensor) -> Tensor:
    """The "tight lower bound" ``sum_x m_x / (m_x + S - M_x)`` plotted in the DISD code (section 5(c)).

    ``m = min(P, Q)``, ``M = max(P, Q)``, ``S = sum M`` (github.com/majid-daliri/DISD,
    ``plot_coupling_bounds.py``). Terms with ``m_x = 0`` are 0. P: [..., V]; Q: [..., V]. Returns [...].
    """
    P, Q = _check_pair("P", P, "Q", Q)
    m, M = torch.minimum(P, Q), torch.maximum(P, Q)
    den = m + M.sum(-1, keepdim=True) - M
    return torch.where(m > 0, m / torch.where(m > 0, den, 1.0), 0.0).sum(-1)


def _race(P: Tensor, E: Tensor) -> Tensor:
    """Unchecked exponential race ``argmin_x E[..., x] / P[..., x]`` (P broadcast to E, E > 0)."""
    return (E / P).argmin(-1)  # P = 0 -> E/0 = inf never wins; argmin returns the first minimum


def race_argmin(P: Tensor, E: Tensor) -> Tensor:
    """Exponential race (Gumbel-max) sampler: ``argmin_x E[..., x] / P[..., x]`` ~ ``norm(P)``.

    arXiv 2408.07978, section 5(b): with ``E = -ln u`` i.i.d. Exp(1), ``E_x / P_x ~ Exp(P_x)`` and the
    first arrival is x with probability ``P_x / sum P``; equivalently ``argmax log P + Gumbel``.
    Tokens with ``P_x = 0`` never win (``E/0 = inf``); ties go to the lowest index.
    P: [..., V] weights, broadcast to E; E: [..., V] Exp(1) noise, strictly positive. Returns [...] int64.
    One division and one argmin: no logarithm is taken here.
    """
    P, E = _check_dist("P", P), _check_dist("E", E, positive=True)
    _check_broadcasts_to("P", P, E.shape, "E")
    return _race(P, E)


def gumbel_coupled_sample(P: Tensor, Q: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """Communication-free Gumbel coupling: ``a = race(P, E)``, ``b = race(Q, E)`` with shared ``E = -ln u``.

    arXiv 2408.07978, section 5(b). ``a ~ P``, ``b ~ Q`` and ``Pr[a = b] = gumbel_match_prob(P, Q)``.
    P: [..., V]; Q: [..., V] (both broadcast to u); u: [..., V] uniforms in the open interval (0, 1).
    Returns ``(a, b)``, each [...] int64.
    """
    P, Q, u = _check_dist("P", P), _check_dist("Q", Q), _check_dist("u", u, positive=True)
    _check_broadcasts_to("P", P, u.shape, "u")
    _check_broadcasts_to("Q", Q, u.shape, "u")
    if u.numel() and float(u.max()) >= 1.0:
        raise ValueError("u must lie in the open interval (0, 1)")
    E = -torch.log(u)
    return _race(P, E), _race(Q, E)


def _first_hit(hit: Tensor, j: Tensor) -> tuple[Tensor, Tensor]:
    """Token of the first True in each row of ``hit`` [n, D] (darts ``j`` [n, D]) and whether any hit."""
    first = hit.to(torch.uint8).argmax(-1, keepdim=True)  # argmax returns the first maximum
    return j.gather(-1, first).squeeze(-1), hit.any(-1)


def wmh_coupled_sample(
    P: Tensor, Q: Tensor, generator: torch.Generator, n_max_darts: int = 64
) -> tuple[Tensor, Tensor]:
    """Weighted MinHash coupling by dart throwing restricted to the union region (arXiv 2408.07978, section 5(b)).

    Shared darts ``(j, h)``: ``a`` = token of the first dart with ``h < P_j``, ``b`` = token of the first
    dart with ``h < Q_j``. As in the DISD code, darts are drawn only in the union region ``{h < max(P_j, Q_j)}``
    (``j ~ max(P,Q) / sum max``, ``h ~ U[0, max(P_j, Q_j))``), which has the same joint law of ``(a, b)``
    as uniform darts on ``[V] x [0, 1)`` but wastes none. Batched: every unresolved row receives a round
    of ``n_max_darts`` darts; each dart hits a side with probability >= 1/2, so a further round is needed
    with probability <= 2^-n_max_darts, and rounds continue the same dart sequence, so the law is exact.

    P: [..., V]; Q: [..., V] probability vectors, each row with positive mass; generator: CPU
    ``torch.Generator`` driving all randomness. Returns ``(a, b)``, each [...] int64.
    """
    P, Q = _check_pair("P", P, "Q", Q)
    if P.numel() and not bool(((P.sum(-1) > 0) & (Q.sum(-1) > 0)).all()):
        raise ValueError("P and Q must have positive mass in every row")
    batch, V = P.shape[:-1], P.shape[-1]
    P, Q = P.reshape(-1, V), Q.reshape(-1, V)
    M = torch.maximum(P, Q)  # [B, V]
    cdf = M.cumsum(-1)
    cdf = cdf / cdf[:, -1:]  # last entry exactly 1
    a = torch.full((P.shape[0],), -1, dtype=torch.long)
    b = torch.full_like(a, -1)
    while True:
        rows = ((a < 0) | (b < 0)).nonzero().squeeze(-1)
        if rows.numel() == 0:
            break
        shape = (rows.numel(), n_max_darts)
        u = torch.rand(shape, dtype=P.dtype, generator=generator)
        j = torch.searchsorted(cdf[rows], u, right=True).clamp_max(V - 1)  # zero-mass tokens are never hit
        h = torch.rand(shape, dtype=P.dtype, generator=generator) * M[rows].gather(-1, j)
        a_new, a_hit = _first_hit(h < P[rows].gather(-1, j), j)
        b_new, b_hit = _first_hit(h < Q[rows].gather(-1, j), j)
        a[rows] = torch.where((a[rows] < 0) & a_hit, a_new, a[rows])
        b[rows] = torch.where((b[rows] < 0) & b_hit, b_new, b[rows])
    return a.reshape(batch), b.reshape(batch)
