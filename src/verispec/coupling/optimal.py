"""Optimal acceptance with k drafts: the "physical limit" of multi-draft verification.

ALGORITHMS.md section 7 and SpecTr's OTM linear program (section 3(b1)): Sun et al. arXiv 2310.15141; Khisti,
Ebrahimi, Dbouk, Behboodi, Memisevic, Louizos arXiv 2410.18234; Hu, Zheng, Viswanathan, Chen, Rossi,
Wu, Manocha, Huang arXiv 2502.18779. p = target, q = draft, both [..., V]. The k drafts are
``x_1..x_k`` from q, either i.i.d. (``replacement=True``) or sequentially without replacement (each
draw from q restricted to tokens not drawn yet, renormalised; if k exceeds the support size of q,
the whole support is drawn). By max-flow/min-cut on the OTM LP,

    alpha*(p, q, k) = min over H of [ p(H) + 1 - Pr(all k drafts lie in H) ].

Three evaluations: the fast nested-set method, brute force over all subsets, and the LP itself.
"""

from __future__ import annotations

import itertools

import numpy as np
import scipy.optimize
import scipy.sparse
import torch
from torch import Tensor

from ._draft_law import count_tuples, draft_tuples
from ._race_quadrature import miss_prob_without_replacement
from ._validate import DTYPE, _check_k, _check_pair


def _int_k(k) -> int:
    k = _check_k("k", k)
    if k.numel() != 1:
        raise ValueError("k must be a single integer here")
    return int(k)


def optimal_acceptance(p: Tensor, q: Tensor, k: int, replacement: bool = True) -> Tensor:
    """Optimal k-draft acceptance ``alpha*`` (ALGORITHMS.md section 7; arXiv 2410.18234, 2502.18779).

    Evaluates ``p(H) + Pr(some draft outside H)`` on the V + 1 nested sets ``H_m`` made of the m tokens
    with the smallest ``p/q`` and returns the minimum. Tokens with ``q = 0`` sort last (ratio inf;
    with ``p = q = 0`` they change nothing). Nested sets attain the minimum with replacement by an
    exchange argument (``q(H)^k`` is convex in ``q(H)``); without replacement this matched brute force on
    every random instance tried (ALGORITHMS.md; this package's tests), not proven here.

    * ``replacement=True``: ``Pr(all in H) = q(H)^k``; O(V log V).
    * ``replacement=False``: exact up to quadrature error (~1e-13) by the exponential-race integral of
      :mod:`verispec.coupling._race_quadrature`; cost O(n_nodes * k * n) after restricting to the support
      of q (n tokens; n_nodes ~ 160 for smallest positive q = 1e-10, growing like ln(1 / q_min)):
      ~0.3 s per row at V = 49152, k = 8 on one CPU thread.

    p: [..., V] target; q: [..., V] draft; k: number of drafts (int >= 1). Returns alpha*: [...].
    """
    p, q = _check_pair("p", p, "q", q)
    k = _int_k(k)
    batch, V = p.shape[:-1], p.shape[-1]
    if p.numel() == 0:
        return p.new_empty(batch)
    p, q = p.reshape(-1, V), q.reshape(-1, V)
    key = torch.where(q > 0, p / q, torch.inf)
    order = torch.sort(key, dim=-1).indices
    ps, qs = p.gather(-1, order), q.gather(-1, order)
    zero = p.new_zeros(p.shape[0], 1)
    p_in = torch.cat([zero, ps.cumsum(-1)], -1)  # [B, V+1]: p(H_m)
    if replacement or k == 1:
        c = torch.cat([qs.flip(-1).cumsum(-1).flip(-1), zero], -1) / qs.sum(-1, keepdim=True)  # q(H_m^c)
        miss = -torch.expm1(k * torch.log1p(-c.clamp(0.0, 1.0)))  # 1 - q(H_m)^k
    else:
        n = int((q > 0).sum(-1).max())  # support of q comes first in the sorted order
        miss = torch.cat([miss_prob_without_replacement(qs[:, :n], k), p.new_zeros(p.shape[0], V - n)], -1)
    return (p_in + miss).amin(-1).reshape(batch)


def _rows(p, q, k):
    """Validated inputs as numpy rows [B, V] plus the batch shape (for the tiny-V references)."""
    p, q = _check_pair("p", p, "q", q)
    return p.reshape(-1, p.shape[-1]).numpy(), q.reshape(-1, q.shape[-1]).numpy(), p.shape[:-1], _int_k(k)


def optimal_acceptance_bruteforce(p: Tensor, q: Tensor, k: int, replacement: bool = True,
                                  max_work: int = 10**8) -> Tensor:
    """``alpha*`` by minimising over ALL ``2^V`` subsets H (ALGORITHMS.md section 7; reference, tiny V only).

    ``Pr(all k drafts in H)`` is ``q(H)^k`` with replacement, and the total probability of the enumerated
    draft tuples inside H without replacement (see :mod:`verispec.coupling._draft_law`).
    p: [..., V]; q: [..., V]; k >= 1. Returns [...]. ``ValueError`` if 2^V times the tuple count exceeds max_work.
    """
    p, q, batch, k = _rows(p, q, k)
    V = p.shape[-1]
    if 2**V * (1 if replacement else count_tuples(V, k, False)) > max_work:
        raise ValueError(f"V = {V} is too large for brute force")
    subsets = np.array(list(itertools.product([False, True], repeat=V)), dtype=bool)  # [2^V, V]
    out = []
    for pr, qr in zip(p, q):
        if replacement:
            inside = (subsets @ (qr / qr.sum())) ** k
        else:
            tuples, probs = draft_tuples(qr, k, replacement=False)
            inside = subsets[:, tuples].all(-1) @ probs  # [2^V]
        out.append(float(np.min(subsets @ pr + 1.0 - inside)))
    return torch.tensor(out, dtype=DTYPE).reshape(batch)


def optimal_acceptance_lp(p: Tensor, q: Tensor, k: int, replacement: bool = True,
                          max_tuples: int = 20_000) -> Tensor:
    """``alpha*`` from SpecTr's optimal-transport LP "OTM-k" (arXiv 2310.15141; ALGORITHMS.md section 3(b1)).

    Robust max-flow form: a variable ``pi(x, y) >= 0`` only for tokens ``y`` in tuple x (with
    ``p(y) > 0``), constraints ``sum_y pi(x, y) <= Q(x)`` and ``sum_x pi(x, y) <= p(y)``; maximise
    ``sum pi``. The unused mass goes to the residual, so the LP is always feasible. Solved by HiGHS.
    Q is the law of the ordered draft tuples (i.i.d., or sequential without replacement).
    p: [..., V]; q: [..., V]; k >= 1. Returns [...]. ``ValueError`` if there are more than
    ``max_tuples`` tuples (V**k with replacement).
    """
    p, q, batch, k = _rows(p, q, k)
    V = p.shape[-1]
    if count_tuples(V, k, replacement) > max_tuples:
        raise ValueError(f"V**k = {V}**{k} draft tuples is too many for the LP (max_tuples={max_tuples})")
    return torch.tensor([_lp_row(pr, qr, k, replacement) for pr, qr in zip(p, q)], dtype=DTYPE).reshape(batch)


def _lp_row(p: np.ndarray, q: np.ndarray, k: int, replacement: bool) -> float:
    tuples, probs = draft_tuples(q, k, replacement)
    edges = [(t, y) for t, row in enumerate(tuples) for y in sorted(set(row.tolist())) if p[y] > 0]
    if not edges:
        return 0.0
    t_idx, y_idx = map(np.array, zip(*edges))
    cols = np.arange(len(edges))
    A = scipy.sparse.vstack([
        scipy.sparse.csr_matrix((np.ones(len(edges)), (t_idx, cols)), shape=(len(tuples), len(edges))),
        scipy.sparse.csr_matrix((np.ones(len(edges)), (y_idx, cols)), shape=(p.size, len(edges))),
    ]).tocsr()
    b = np.concatenate([probs, p])
    res = scipy.optimize.linprog(-np.ones(len(edges)), A_ub=A, b_ub=b, bounds=(0, None), method="highs")
    if res.status != 0:
        raise RuntimeError(f"HiGHS failed: {res.message}")
    return float(-res.fun)
