"""SpecTr's K-sequential selection (K-SEQ) for k i.i.d. drafts.

Sun, Suresh, Ro, Beirami, Jain, Yu, "SpecTr: Fast Speculative Decoding via Optimal Transport",
NeurIPS 2023, arXiv 2310.15141; ALGORITHMS.md section 3(b2). Each of the k candidates ``x ~ q`` is checked
in turn and accepted with probability ``min(1, p(x) / (rho q(x)))``; on total rejection the output is
drawn from ``norm(max(p - rho q, 0))``. Lossless iff ``f(rho) <= rho``; acceptance
``1 - (1 - beta(rho))^k`` falls with rho, so the smallest valid ``rho*`` is used.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._validate import DTYPE, _check_dist, _check_k, _check_pair
from .maximal import residual_unchecked


def _beta(p: Tensor, q: Tensor, rho: Tensor) -> Tensor:
    return torch.minimum(q, p / rho.unsqueeze(-1)).sum(-1)


def _accept(beta: Tensor, k: Tensor) -> Tensor:
    """``1 - (1 - beta)^k`` without cancellation for small beta."""
    return -torch.expm1(k * torch.log1p(-beta))


def _f(p: Tensor, q: Tensor, rho: Tensor, k: Tensor) -> Tensor:
    """``f(rho) = (1 - (1 - beta)^k) / beta``; equals k in the limit beta -> 0 (guarded)."""
    beta = _beta(p, q, rho)
    return torch.where(beta > 0, _accept(beta, k) / torch.where(beta > 0, beta, 1.0), k)


def kseq_beta(p: Tensor, q: Tensor, rho: Tensor | float) -> Tensor:
    """Per-candidate acceptance mass ``beta(rho) = sum_x min(q(x), p(x) / rho)`` (arXiv 2310.15141; section 3(b2)).

    p: [..., V] target; q: [..., V] draft; rho: [...] (or a float) >= 1. Returns [...].
    """
    p, q = _check_pair("p", p, "q", q)
    return _beta(p, q, _check_dist("rho", rho, min_dim=0, positive=True))


def kseq_rho(p: Tensor, q: Tensor, k: int | Tensor, iters: int = 64, rtol: float = 1e-10) -> Tensor:
    """Smallest ``rho in [1, k]`` with ``f(rho) = (1 - (1 - beta(rho))^k) / beta(rho) <= rho`` (section 3(b2)).

    arXiv 2310.15141, K-SEQ. The valid set is an interval ``[rho*, k]`` (``f(k) <= k``; if ``f(rho) <= rho``
    then ``rho' beta(rho') >= rho beta(rho)`` for ``rho' > rho``), so vectorised bisection converges to
    ``rho*``; it stops when every bracket has relative width ``<= rtol`` (or after ``iters`` halvings) and
    returns the bracket's upper end, which satisfies ``f(rho) <= rho`` so the residual is a valid law.
    ``k = 1`` gives ``rho = 1`` exactly; ``beta(1) = 0`` (disjoint supports: every rho is valid, nothing
    is ever accepted) gives ``rho = 1``. Cost O(V) per halving, ~46 halvings for k = 8.

    p: [..., V] target; q: [..., V] draft; k: int or integer tensor [...] >= 1 (per-row counts).
    Returns rho*: [...].
    """
    p, q = _check_pair("p", p, "q", q)
    return kseq_rho_unchecked(p, q, _check_k("k", k), iters, rtol)


def kseq_rho_unchecked(p: Tensor, q: Tensor, k: Tensor, iters: int = 64, rtol: float = 1e-10) -> Tensor:
    """`kseq_rho` without input checks (k: float64 tensor of integers >= 1), for the verifiers' hot path.

    Vectorised bisection to relative width rtol (1e-10: below that, rounding in the O(V) sum beta
    makes the computed sign of f(rho) - rho noise); returns the bracket's upper end.
    """
    k = k.to(DTYPE).expand(p.shape[:-1])
    one = torch.ones(p.shape[:-1], dtype=DTYPE)
    done = (k == 1) | (_beta(p, q, one) == 0) | (_f(p, q, one, k) <= 1)  # rho = 1 is valid
    lo, hi = one.clone(), torch.where(done, one, k)
    for _ in range(iters):
        if bool((hi - lo <= rtol * hi).all()):
            break
        mid = 0.5 * (lo + hi)
        ok = _f(p, q, mid, k) <= mid
        hi, lo = torch.where(ok, mid, hi), torch.where(ok, lo, mid)
    return hi


def kseq_acceptance(p: Tensor, q: Tensor, k: int | Tensor) -> Tensor:
    """K-SEQ acceptance ``1 - (1 - beta(rho*))^k`` (arXiv 2310.15141; ALGORITHMS.md section 3(b2)).

    At least ``(1 - 1/e)`` times the optimal k-draft acceptance (SpecTr's guarantee).
    p: [..., V] target; q: [..., V] draft; k: int or integer tensor [...] >= 1. Returns [...].
    """
    p, q = _check_pair("p", p, "q", q)
    k = _check_k("k", k)
    return _accept(_beta(p, q, kseq_rho(p, q, k)), k)


def kseq_residual(p: Tensor, q: Tensor, rho: Tensor | float, k: int | Tensor) -> tuple[Tensor, Tensor]:
    """K-SEQ residual ``norm(p - f(rho) min(q, p / rho))`` and its mass (arXiv 2310.15141; section 3(b2)).

    After k candidates are all rejected, the output must carry the mass the acceptances did not:
    ``p - f(rho) min(q, p/rho)``, non-negative for every valid rho (``f(rho) <= rho``); at the exact
    root it equals ``max(p - rho q, 0)``. Using the general form keeps K-SEQ exactly lossless for
    the bracket end that `kseq_rho` returns, not only at the ideal root. The mass is
    ``1 - f(rho) beta(rho) = (1 - beta(rho))^k``. Zero mass uses the NaN-free fallback r = p.
    p: [..., V] target; q: [..., V] draft; rho: [...] (or a float); k: int or [...]. Returns (r, mass).
    """
    p, q = _check_pair("p", p, "q", q)
    rho = _check_dist("rho", rho, min_dim=0, positive=True)
    return kseq_residual_unchecked(p, q, rho, _check_k("k", k))


def kseq_residual_unchecked(p: Tensor, q: Tensor, rho: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    """`kseq_residual` without input checks (the verifiers' hot path)."""
    rho = rho.expand(p.shape[:-1])
    fq = _f(p, q, rho, k.to(DTYPE).expand(p.shape[:-1])).unsqueeze(-1) * torch.minimum(q, p / rho.unsqueeze(-1))
    return residual_unchecked(p, fq)
