"""Greedy, token-level and SpecInfer verification: recursive rejection sampling at each node.

* token    Leviathan, Kalman, Matias 2023 (arXiv 2211.17192), Algorithm 1: accept x ~ q with
           probability min(1, p(x)/q(x)), else draw from norm(max(p - q, 0)). One trial per node.
* specinfer  Miao et al. 2024 (arXiv 2305.09781), Algorithm 2 (VerifyStochastic / multi-step
           speculative sampling): the trials at a node are tested in draw order; after a
           rejection p <- norm(max(p - q_i, 0)) and the next trial is tested against that.
           With i.i.d. drafts (with replacement) every draft is a trial, duplicates included.
* specinfer-wor  the same for children drawn without replacement (Jeon et al. 2024,
           arXiv 2402.14160): trial i uses q_i = norm(q * 1{x not drawn before}).
* greedy   temperature 0: accept iff x = argmax p; the recovered token is argmax p.

Deterministic drafts (kind "onehot": greedy, n-gram, top-k children) are point-mass proposals
q_i = onehot(x_i); verifying them with a soft q is biased (ALGORITHMS.md §1 pitfall 2).
"""
from __future__ import annotations

import torch

from ..coupling.maximal import residual
from .walk import NodeRule


def trial_q(q_u: torch.Tensor | None, x_i: torch.Tensor, drawn: torch.Tensor, kind: str, V: int) -> torch.Tensor:
    """Law [R, V] that trial i's token x_i [R] was drawn from, given the tokens drawn before (drawn [R, V] bool)."""
    if kind == "onehot":
        return torch.nn.functional.one_hot(x_i.clamp(min=0), V).to(torch.float64)
    if kind == "wor":
        rest = torch.where(drawn, 0.0, q_u)
        return rest / rest.sum(-1, keepdim=True).clamp_min(1e-300)
    return q_u


def rrs_decide(p_u: torch.Tensor, q_u: torch.Tensor | None, x: torch.Tensor, valid: torch.Tensor,
               kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Recursive rejection sampling at one node (SpecInfer Algorithm 2, lines 7-14).

    p_u [R, V]; q_u [R, V] or None (onehot); x [R, m] trial tokens; valid [R, m].
    Returns a [R, m] (conditional acceptance of trial i) and the final residual [R, V].
    """
    R, m = x.shape
    V = p_u.shape[-1]
    cur = p_u
    a = torch.zeros(R, m, dtype=p_u.dtype)
    drawn = torch.zeros(R, V, dtype=torch.bool)
    for i in range(m):
        v = valid[:, i]
        if not v.any():
            continue
        xi = x[:, i].clamp(min=0)
        qi = trial_q(q_u, xi, drawn, kind, V)
        px = cur.gather(1, xi[:, None])[:, 0]
        qx = qi.gather(1, xi[:, None])[:, 0]
        a[:, i] = torch.where(v, torch.clamp(px / qx.clamp_min(1e-300), max=1.0), 0.0)
        r, _ = residual(cur, qi)
        cur = torch.where(v[:, None], r, cur)
        if kind == "wor":
            drawn = drawn | (torch.nn.functional.one_hot(xi, V).bool() & v[:, None])
    return a, cur


class Token(NodeRule):
    """Token-level speculative sampling (Leviathan et al. 2023, arXiv 2211.17192, Alg. 1)."""

    name = "token"
    draft_kinds = ("iid", "onehot")
    max_drafts = 1

    def decide(self, p_u, q_u, x, valid, kind):
        return rrs_decide(p_u, q_u, x, valid, kind)


class SpecInfer(Token):
    """SpecInfer multi-step speculative sampling, i.i.d. drafts (arXiv 2305.09781, Alg. 2)."""

    name = "specinfer"
    max_drafts = None


class SpecInferWOR(SpecInfer):
    """Recursive rejection sampling for children drawn without replacement (arXiv 2402.14160)."""

    name = "specinfer-wor"
    draft_kinds = ("wor", "onehot")


class Greedy(NodeRule):
    """Greedy verification: the target is the point mass on argmax p (temperature 0)."""

    name = "greedy"
    draft_kinds = ("iid", "wor", "onehot", "gumbel")
    needs_q = False
    deterministic = True
    greedy_target = True

    def decide(self, p_u, q_u, x, valid, kind):
        g = p_u.argmax(-1, keepdim=True)
        a = ((x == g) & valid).to(p_u.dtype)
        return a, torch.zeros_like(p_u).scatter_(-1, g, 1.0)
