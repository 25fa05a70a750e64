"""SpecTr K-SEQ at every node of a tree of k i.i.d. drafts (Sun et al. 2023, arXiv 2310.15141).

At a node with m surviving drafts (i.i.d. from q_u), rho* is the smallest rho in [1, m] with
(1 - (1 - beta)^m) / beta <= rho, beta = sum min(q, p / rho) (ALGORITHMS.md §3 b2). The trials
are tested in draw order, each accepted with probability min(1, p(x) / (rho* q(x))) -- the
threshold does not change after a rejection -- and if all fail the token is drawn from
norm(max(p - rho* q, 0)). rho* is recomputed for the number of drafts that survive at each
depth (§3 b3). Acceptance at a node is 1 - (1 - beta(rho*))^m >= (1 - 1/e) OPT.
"""
from __future__ import annotations

import torch

from ..coupling.kseq import kseq_residual, kseq_rho
from .walk import NodeRule


class SpecTr(NodeRule):
    name = "spectr"
    draft_kinds = ("iid",)  # K-SEQ assumes identically distributed drafts

    def decide(self, p_u, q_u, x, valid, kind):
        m = valid.sum(-1)
        rho = kseq_rho(p_u, q_u, m.clamp(min=1))  # [R]
        px = p_u.gather(1, x.clamp(min=0))
        qx = q_u.gather(1, x.clamp(min=0))
        a = torch.where(valid, torch.clamp(px / (rho[:, None] * qx).clamp_min(1e-300), max=1.0), 0.0)
        r = torch.where((m > 0)[:, None], kseq_residual(p_u, q_u, rho)[0], p_u)
        return a, r
