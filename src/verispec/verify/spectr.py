"""SpecTr K-SEQ at every node of a tree of k i.i.d. drafts (Sun et al. 2023, arXiv 2310.15141).

At a node with m surviving drafts (i.i.d. from q_u), rho* is the smallest rho in [1, m] with
(1 - (1 - beta)^m) / beta <= rho, beta = sum min(q, p / rho) (ALGORITHMS.md §3 b2). The trials
are tested in draw order, each accepted with probability min(1, p(x) / (rho* q(x))) -- the
threshold does not change after a rejection -- and if all fail the token is drawn from
norm(p - f(rho) min(q, p / rho)), which is norm(max(p - rho* q, 0)) at the exact root and stays
exact for the computed rho (the upper end of a bisection bracket). rho* is recomputed for the number of drafts that survive at each
depth (§3 b3). Acceptance at a node is 1 - (1 - beta(rho*))^m >= (1 - 1/e) OPT.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..coupling.kseq import kseq_residual_unchecked, kseq_rho_unchecked
from .walk import NodeRule


@dataclass
class KSeqState:
    p: torch.Tensor  # [R, V]
    q: torch.Tensor  # [R, V]
    x: torch.Tensor  # [R, m]
    m: torch.Tensor  # [R] number of trials at the node
    rho: torch.Tensor  # [R] rho* for m i.i.d. drafts (1 when m <= 1)


class SpecTr(NodeRule):
    name = "spectr"
    draft_kinds = ("iid",)  # K-SEQ assumes identically distributed drafts

    def begin(self, p_u, q_u, x, valid, kind):
        m = valid.sum(-1)
        rho = torch.ones(m.shape, dtype=p_u.dtype)
        many = m > 1
        if many.any():
            rho[many] = kseq_rho_unchecked(p_u[many], q_u[many], m[many].to(p_u.dtype))
        return KSeqState(p_u, q_u, x, m, rho)

    def accept_prob(self, s: KSeqState, i: int) -> torch.Tensor:
        xi = s.x[:, i : i + 1].clamp(min=0)
        px, qx = s.p.gather(1, xi)[:, 0], s.q.gather(1, xi)[:, 0]
        return torch.clamp(px / (s.rho * qx).clamp_min(1e-300), max=1.0)

    def recovered(self, s: KSeqState) -> torch.Tensor:
        r, _ = kseq_residual_unchecked(s.p, s.q, s.rho, s.m.clamp(min=1))
        return torch.where((s.m > 0)[:, None], r, s.p)
