"""Block verification (Sun, Mendlovic, Leviathan, Aharoni, Ro, Beirami, Suresh; arXiv 2403.10444, Alg. 2).

For a chain x_1..x_L with target laws p_0..p_L (p_i = target after i draft tokens) and draft
laws q_0..q_{L-1}:

    w_0 = 1,  w_i = min(1, w_{i-1} p_{i-1}(x_i) / q_{i-1}(x_i))      clipped running ratio
    r_i = max(w_i p_i - q_i, 0),  m_i = sum r_i                        (i = 0..L-1)
    h_i = m_i / (m_i + 1 - w_i)  (1 if the denominator is 0),  h_L = w_L
    tau = the LARGEST i in 1..L with eta_i <= h_i (0 if none): every eta_i is drawn and a
          failure does not stop the scan;
    next token ~ norm(r_tau) if tau < L, else p_L (bonus).

Block >= token in expected tokens per iteration on every instance (Theorem 2). It reads the
uniforms past tau, so they must never be reused by a later iteration (ALGORITHMS.md §2.6):
they are step-keyed. For deterministic drafts (q one-hot) m_i = w_i (1 - p_i(x_{i+1})).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..noise import Purpose, StepNoise
from ..tree import DraftTree, VerifyResult
from .base import Verifier, check_inputs, sample_categorical


@dataclass
class BlockDecision:
    h: torch.Tensor  # [B, gamma + 1] acceptance thresholds h_1..h_L (index 0 unused = 1), 0 past L
    w: torch.Tensor  # [B, gamma + 1] clipped running ratios w_0..w_gamma
    rows: torch.Tensor  # [B, gamma + 1] row of the tree after i accepted tokens (clamped past L)
    x: torch.Tensor  # [B, gamma] draft tokens
    L: torch.Tensor  # [B] draft length


def block_decide(tree: DraftTree, p: torch.Tensor) -> BlockDecision:
    """Thresholds h_i from one pass over the chain's p and q rows (the residuals are built on demand)."""
    B, _, gamma = tree.paths.shape
    nodes = tree.paths[:, 0]  # [B, gamma]
    L = (nodes >= 0).sum(-1)
    rows = torch.cat([torch.zeros(B, 1, dtype=torch.int64), nodes.clamp(min=0) + 1], 1)  # [B, gamma + 1]
    rows = torch.where(torch.arange(gamma + 1) <= L[:, None], rows, rows.gather(1, L[:, None]))
    bidx = torch.arange(B)[:, None]
    x = tree.tokens.gather(1, nodes.clamp(min=0))  # [B, gamma]
    P = p[bidx, rows[:, :-1]]  # [B, gamma, V]  p_0..p_{gamma-1}
    px = P.gather(2, x[..., None])[..., 0]  # p_{i-1}(x_i)
    if tree.kind == "onehot":
        qx = torch.ones_like(px)
    else:
        Q = tree.q[bidx, rows[:, :-1]]
        qx = Q.gather(2, x[..., None])[..., 0]
    ratio = torch.where(nodes >= 0, px / qx.clamp_min(1e-300), 1.0)
    w = [torch.ones(B, dtype=p.dtype)]
    for i in range(gamma):
        w.append(torch.clamp(w[-1] * ratio[:, i], max=1.0))
    w = torch.stack(w, 1)  # [B, gamma + 1]
    if tree.kind == "onehot":  # m_i = w_i (1 - p_i(x_{i+1}))
        m = w[:, :-1] * (1 - px)
    else:
        m = torch.clamp(w[:, :-1, None] * P - Q, min=0.0).sum(-1)  # [B, gamma]  m_0..m_{gamma-1}
    den = m + 1 - w[:, :-1]
    h = torch.where(den > 0, m / den.clamp_min(1e-300), 1.0)
    h = torch.cat([torch.ones(B, 1, dtype=p.dtype), h[:, 1:], torch.zeros(B, 1, dtype=p.dtype)], 1)
    idx = torch.arange(gamma + 1)
    h = torch.where(idx == L[:, None], w.gather(1, L[:, None]), torch.where(idx > L[:, None], 0.0, h))
    return BlockDecision(h, w, rows, x, L)


def block_next_law(tree: DraftTree, p: torch.Tensor, d: BlockDecision, tau: torch.Tensor) -> torch.Tensor:
    """Law [B, V] of the next token given tau [B]: norm(max(w_tau p_tau - q_tau, 0)), or p_L at tau = L."""
    B = tau.shape[0]
    bidx = torch.arange(B)
    P = p[bidx, d.rows[bidx, tau]]
    w = d.w[bidx, tau][:, None]
    if tree.kind == "onehot":
        x_next = d.x.gather(1, tau.clamp(max=d.x.shape[1] - 1)[:, None])
        r = (w * P).scatter(1, x_next, 0.0)
    else:
        r = torch.clamp(w * P - tree.q[bidx, d.rows[bidx, tau]], min=0.0)
    mass = r.sum(-1, keepdim=True)
    r = torch.where(mass > 0, r / mass.clamp_min(1e-300), P)  # a zero-mass residual is never reached (h rule)
    return torch.where((tau == d.L)[:, None], P, r)


def tau_law(h: torch.Tensor) -> torch.Tensor:
    """h [B, gamma + 1] (h_0 = 1) -> P(tau = i) [B, gamma + 1] = h_i prod_{j > i} (1 - h_j)."""
    tail = torch.flip(torch.cumprod(torch.flip(1 - h, [1]), 1), [1])  # prod_{j >= i} (1 - h_j)
    after = torch.cat([tail[:, 1:], torch.ones_like(tail[:, :1])], 1)
    return h * after


class Block(Verifier):
    """Block verification: a single chain, i.i.d. or deterministic draft."""

    name = "block"
    draft_kinds = ("iid", "onehot")
    max_drafts = 1

    def decide(self, tree: DraftTree, p: torch.Tensor) -> BlockDecision:
        return block_decide(tree, p)

    def tau_probs(self, h: torch.Tensor) -> torch.Tensor:
        """h [B, gamma + 1] -> P(tau = i) [B, gamma + 1]."""
        return tau_law(h)

    def draw_tau(self, h: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        """h [B, gamma + 1], eta [B, gamma] uniforms -> tau [B]: the LAST i with eta_i <= h_i."""
        hit = torch.cat([torch.ones_like(h[:, :1], dtype=torch.bool), eta <= h[:, 1:]], 1)
        return (hit * torch.arange(h.shape[1])).amax(1)

    def next_law(self, tree: DraftTree, p: torch.Tensor, d: BlockDecision, tau: torch.Tensor) -> torch.Tensor:
        """Law [B, V] of the token after tau accepted draft tokens."""
        return block_next_law(tree, p, d, tau)

    def sample(self, tree: DraftTree, p: torch.Tensor, noise: StepNoise) -> VerifyResult:
        d = self.decide(tree, p)
        B, gamma1 = d.h.shape
        eta = noise.uniform(Purpose.ACCEPT, torch.arange(1, gamma1).expand(B, gamma1 - 1))  # eta_1..eta_gamma
        tau = self.draw_tau(d.h, eta)
        y = sample_categorical(self.next_law(tree, p, d, tau), noise.uniform(Purpose.RESIDUAL, 0))
        path = torch.where(torch.arange(gamma1 - 1) < tau[:, None], tree.paths[:, 0], -1)
        return VerifyResult(path, tau, y, tau == d.L)

    def law(self, tree: DraftTree, p: torch.Tensor) -> torch.Tensor:
        tree, p = check_inputs(self, tree, p)
        d = self.decide(tree, p)
        pt = self.tau_probs(d.h)  # [B, gamma + 1]
        law = torch.zeros_like(p)
        for i in range(pt.shape[1]):
            tau = torch.full((tree.batch,), i, dtype=torch.int64).minimum(d.L)
            r = self.next_law(tree, p, d, tau) * torch.where(i <= d.L, pt[:, i], 0.0)[:, None]
            law.scatter_add_(1, d.rows[:, i, None, None].expand(-1, 1, p.shape[-1]), r[:, None])
        return law
