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
    r: torch.Tensor  # [B, gamma + 1, V] law of the next token if tau = i (residual, or p_L at i = L)
    rows: torch.Tensor  # [B, gamma + 1] row of the tree after i accepted tokens (clamped past L)
    L: torch.Tensor  # [B] draft length


def block_decide(tree: DraftTree, p: torch.Tensor) -> BlockDecision:
    B, _, gamma = tree.paths.shape
    V = p.shape[-1]
    nodes = tree.paths[:, 0]  # [B, gamma]
    L = (nodes >= 0).sum(-1)
    rows = torch.cat([torch.zeros(B, 1, dtype=torch.int64), nodes.clamp(min=0) + 1], 1)  # [B, gamma + 1]
    rows = torch.where(torch.arange(gamma + 1) <= L[:, None], rows, rows.gather(1, L[:, None]))
    bidx = torch.arange(B)[:, None]
    P = p[bidx, rows]  # [B, gamma + 1, V]  p_i
    x = tree.tokens.gather(1, nodes.clamp(min=0))  # [B, gamma]
    valid = nodes >= 0
    px = P[:, :-1].gather(2, x[..., None])[..., 0]  # p_{i-1}(x_i)
    if tree.kind == "onehot":
        qx = torch.ones_like(px)
        Q = None
    else:
        Q = tree.q[bidx, rows]
        qx = Q[:, :-1].gather(2, x[..., None])[..., 0]
    ratio = torch.where(valid, px / qx.clamp_min(1e-300), 1.0)
    w = [torch.ones(B, dtype=p.dtype)]
    for i in range(gamma):
        w.append(torch.clamp(w[-1] * ratio[:, i], max=1.0))
    w = torch.stack(w, 1)  # [B, gamma + 1]
    W = w[:, :-1, None]
    if Q is None:
        r = (W * P[:, :-1]).scatter(2, x[..., None], 0.0)
    else:
        r = torch.clamp(W * P[:, :-1] - Q[:, :-1], min=0.0)
    m = r.sum(-1)  # [B, gamma]  m_0..m_{gamma-1}
    den = m + 1 - w[:, :-1]
    h = torch.where(den > 0, m / den.clamp_min(1e-300), 1.0)
    h = torch.cat([torch.ones(B, 1, dtype=p.dtype), h[:, 1:], torch.zeros(B, 1, dtype=p.dtype)], 1)
    idx = torch.arange(gamma + 1)
    h = torch.where(idx == L[:, None], w.gather(1, L[:, None]), torch.where(idx > L[:, None], 0.0, h))
    safe = torch.where(m[..., None] > 0, r, P[:, :-1])  # zero-mass residual is never reached (h rule)
    res = torch.cat([safe, P[:, -1:]], 1)
    res = torch.where((idx == L[:, None])[..., None], P, res)  # tau = L: bonus token from p_L
    res = res / res.sum(-1, keepdim=True)
    return BlockDecision(h, res, rows, L)


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

    def sample(self, tree: DraftTree, p: torch.Tensor, noise: StepNoise) -> VerifyResult:
        d = self.decide(tree, p)
        B, gamma1 = d.h.shape
        eta = noise.uniform(Purpose.ACCEPT, torch.arange(1, gamma1).expand(B, gamma1 - 1))  # eta_1..eta_gamma
        tau = self.draw_tau(d.h, eta)
        y = sample_categorical(d.r[torch.arange(B), tau], noise.uniform(Purpose.RESIDUAL, 0))
        path = torch.where(torch.arange(gamma1 - 1) < tau[:, None], tree.paths[:, 0], -1)
        return VerifyResult(path, tau, y, tau == d.L)

    def law(self, tree: DraftTree, p: torch.Tensor) -> torch.Tensor:
        tree, p = check_inputs(self, tree, p)
        d = self.decide(tree, p)
        law = torch.zeros_like(p)
        law.scatter_add_(1, d.rows[..., None].expand_as(d.r), self.tau_probs(d.h)[..., None] * d.r)
        return law
