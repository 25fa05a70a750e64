"""Keyed Exp(1) noise with block minima, and the exact lazy exponential race over it.

The Gumbel rules need, at every position, V Exp(1) numbers per noise row and the race winner
argmin_x E[x] / P[x]. Generating all V numbers costs far more than the rest of a verify call at
V = 49152. The noise is therefore defined block-wise (blocks of BLOCK tokens): for block b of
size s, a block key gives the block minimum m_b = Exp(1) / s and its position j_b (uniform in the
block); every other token x of the block gets E[x] = m_b + Exp(1) from the token's own key. By the
memorylessness of the exponential, these E are exactly i.i.d. Exp(1) (the minimum of s i.i.d.
Exp(1) is Exp(s), sits at a uniform position, and the others exceed it by i.i.d. Exp(1)).

The race then needs only the blocks that can win: min_{x in b} E[x]/P[x] >= m_b / max_{x in b} P[x],
so after scoring the most promising blocks, every block whose bound is above the best score so far
is skipped. `lazy_race` is bit-identical to racing the fully materialised `exponentials`.
"""
from __future__ import annotations

import torch

from .noise import _mix, _uniform, uniform_at

BLOCK = 256
_SALT_MIN, _SALT_POS = 0x6D696E, 0x706F73  # derive the block-level keys from the row key


def _block_params(key: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """key [...] -> (m [..., nb] block minima, j [..., nb] their offsets, sizes [nb])."""
    nb = -(-n // BLOCK)
    sizes = torch.full((nb,), BLOCK, dtype=torch.int64)
    sizes[-1] = n - BLOCK * (nb - 1)
    m = -torch.log(_uniform(_mix(key + _SALT_MIN), nb)) / sizes
    j = (_uniform(_mix(key + _SALT_POS), nb) * sizes).long()
    return m, j, sizes


def exponentials(key: torch.Tensor, n: int) -> torch.Tensor:
    """The keyed noise, materialised: key [...] int64 -> [..., n] i.i.d. Exp(1), float64."""
    m, j, _ = _block_params(key, n)
    nb = m.shape[-1]
    e = -torch.log(_uniform(key, n))
    e = torch.nn.functional.pad(e, (0, nb * BLOCK - n)).view(*key.shape, nb, BLOCK)
    e = m[..., None] + e
    e.scatter_(-1, j[..., None], m[..., None])
    return e.view(*key.shape, nb * BLOCK)[..., :n]


def lazy_race(P: torch.Tensor, key: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
    """argmin_x min_{r active} E_r[x] / P[b, x], E_r = exponentials(key[b, r], V); exact, lazy.

    P: [B, V] non-negative weights (P = 0 never wins); key: [B, R] int64 row keys; active: [B, R].
    Returns [B] int64 (ties: lowest x). Rows of P that are all zero, or with no active row, return 0.
    """
    B, V = P.shape
    R = key.shape[1]
    if V <= 2 * BLOCK:  # small vocabularies: materialising is cheaper than pruning (same numbers)
        E = exponentials(key, V)
        if active is not None:
            E = torch.where(active[..., None], E, torch.inf)
        return (E.amin(1) / P).argmin(-1)
    m, j, _ = _block_params(key, V)  # [B, R, nb]
    nb = m.shape[-1]
    Pb = (P if nb * BLOCK == V else torch.nn.functional.pad(P, (0, nb * BLOCK - V))).view(B, nb, BLOCK)
    bound = m / Pb.amax(-1)[:, None, :]  # lower bound of the block's best score (inf if P = 0 there)
    if active is not None:
        bound = torch.where(active[..., None], bound, torch.inf)
    flat = bound.view(B, R * nb)
    best = torch.full((B,), torch.inf, dtype=P.dtype)
    best_x = torch.zeros(B, dtype=torch.int64)
    todo = torch.zeros(B, R * nb, dtype=torch.bool)
    todo.scatter_(1, flat.topk(min(2, R * nb), largest=False).indices, True)  # most promising first
    done = torch.zeros_like(todo)
    offs = torch.arange(BLOCK)
    while True:
        todo &= ~done & (flat < best[:, None]) & torch.isfinite(flat)
        if not todo.any():
            return best_x
        bi, ci = todo.nonzero(as_tuple=True)
        ri, blk = ci // nb, ci % nb
        x = blk[:, None] * BLOCK + offs  # [n, BLOCK] token ids
        mm = m[bi, ri, blk][:, None]
        e = mm + -torch.log(uniform_at(key[bi, ri], x.clamp(max=V - 1)))
        e = torch.where(offs == j[bi, ri, blk][:, None], mm, e)
        score = torch.where(x < V, e / Pb[bi, blk], torch.inf)
        s_min, s_arg = score.min(-1)
        x_min = x.gather(1, s_arg[:, None])[:, 0]
        cand = torch.full((B,), torch.inf, dtype=P.dtype).scatter_reduce(0, bi, s_min, "amin")
        new_best = torch.minimum(best, cand)
        # lowest token among the (previous and new) candidates reaching the best score
        tie = torch.where(s_min == new_best[bi], x_min, torch.iinfo(torch.int64).max)
        x_new = torch.full((B,), torch.iinfo(torch.int64).max).scatter_reduce(0, bi, tie, "amin")
        x_new = torch.where(best == new_best, torch.minimum(best_x, x_new), x_new)
        best_x = torch.where(torch.isfinite(new_best), x_new, best_x)
        best = new_best
        done |= todo
        todo = torch.ones_like(todo)
