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

from dataclasses import dataclass

import torch

from ..coupling.maximal import residual_unchecked
from .walk import NodeRule


@dataclass
class RRSState:
    cur: torch.Tensor  # [R, V] target law for the next trial (residual after the rejections so far)
    q: torch.Tensor | None  # [R, V] draft law at the node (None: onehot)
    x: torch.Tensor  # [R, m] trial tokens
    kind: str
    drawn: torch.Tensor | None = None  # [R, V] bool, tokens drawn so far (without replacement)
    removed: torch.Tensor | None = None  # [R] q-mass of the drawn tokens

    def trial_law(self, i: int) -> torch.Tensor:
        """The law [R, V] trial i's token was drawn from."""
        xi = self.x[:, i].clamp(min=0)
        if self.kind == "onehot":
            return torch.nn.functional.one_hot(xi, self.cur.shape[-1]).to(self.cur.dtype)
        if self.kind == "wor":
            return torch.where(self.drawn, 0.0, self.q) / (1 - self.removed).clamp_min(1e-300)[:, None]
        return self.q


class RRS(NodeRule):
    """Recursive rejection sampling (SpecInfer Algorithm 2, lines 7-14); `token` is its k = 1 case."""

    def begin(self, p_u, q_u, x, valid, kind):
        s = RRSState(p_u, q_u, x, kind)
        if kind == "wor":
            s.drawn = torch.zeros_like(p_u, dtype=torch.bool)
            s.removed = torch.zeros(p_u.shape[0], dtype=p_u.dtype)
        return s

    def accept_prob(self, s: RRSState, i: int) -> torch.Tensor:
        xi = s.x[:, i : i + 1].clamp(min=0)
        px = s.cur.gather(1, xi)[:, 0]
        if s.kind == "onehot":
            return px
        qx = s.q.gather(1, xi)[:, 0]
        if s.kind == "wor":
            qx = qx / (1 - s.removed).clamp_min(1e-300)
        return torch.clamp(px / qx.clamp_min(1e-300), max=1.0)

    def reject(self, s: RRSState, i: int, rows: torch.Tensor) -> None:
        r, _ = residual_unchecked(s.cur, s.trial_law(i))
        s.cur = torch.where(rows[:, None], r, s.cur)
        if s.kind == "wor":
            xi = s.x[:, i : i + 1].clamp(min=0)
            s.removed = s.removed + torch.where(rows, s.q.gather(1, xi)[:, 0], 0.0)
            s.drawn = s.drawn | (torch.zeros_like(s.drawn).scatter_(1, xi, True) & rows[:, None])

    def recovered(self, s: RRSState) -> torch.Tensor:
        return s.cur


class Token(RRS):
    """Token-level speculative sampling (Leviathan et al. 2023, arXiv 2211.17192, Alg. 1)."""

    name = "token"
    draft_kinds = ("iid", "onehot")
    max_drafts = 1


class SpecInfer(RRS):
    """SpecInfer multi-step speculative sampling, i.i.d. drafts (arXiv 2305.09781, Alg. 2)."""

    name = "specinfer"
    draft_kinds = ("iid", "onehot")


class SpecInferWOR(RRS):
    """Recursive rejection sampling for children drawn without replacement (arXiv 2402.14160)."""

    name = "specinfer-wor"
    draft_kinds = ("wor", "onehot")


@dataclass
class GreedyState:
    g: torch.Tensor  # [R, 1] argmax of p_u
    x: torch.Tensor  # [R, m]
    V: int


class Greedy(NodeRule):
    """Greedy verification: the target is the point mass on argmax p (temperature 0)."""

    name = "greedy"
    draft_kinds = ("iid", "wor", "onehot", "gumbel")
    needs_q = False
    deterministic = True
    greedy_target = True

    def begin(self, p_u, q_u, x, valid, kind):
        return GreedyState(p_u.argmax(-1, keepdim=True), x, p_u.shape[-1])

    def plain(self, p, noise, k=1):
        return p.argmax(-1)

    def accept_prob(self, s: GreedyState, i: int) -> torch.Tensor:
        return (s.x[:, i] == s.g[:, 0]).to(torch.float64)

    def recovered(self, s: GreedyState) -> torch.Tensor:
        return torch.zeros(s.g.shape[0], s.V, dtype=torch.float64).scatter_(1, s.g, 1.0)

    @staticmethod
    def from_argmax(tree, top: torch.Tensor):
        """Greedy verification from the target's argmax alone, the engine's temperature-0 fast path.

        tree: DraftTree [B, N]; top [B, N + 1]: argmax of p at each row (0 = root, i + 1 = node i).
        Same result as ``Greedy()(tree, onehot(top))`` (tested), without building p [B, N + 1, V]:
        node i is accepted iff its token is the argmax at its parent's row and its parent is
        accepted; children of a node carry distinct tokens, so the accepted nodes form one path.
        """
        from ..tree import VerifyResult

        B, N = tree.tokens.shape
        toks, par, tops = tree.tokens.tolist(), tree.parent.tolist(), top.tolist()
        path = torch.full((B, tree.gamma), -1, dtype=torch.int64)
        num = torch.zeros(B, dtype=torch.int64)
        nxt = torch.zeros(B, dtype=torch.int64)
        bonus = torch.zeros(B, dtype=torch.bool)
        for b in range(B):
            ok, last, acc = [False] * N, -1, []
            for i in range(N):  # depth-major numbering: a parent comes before its children
                j = par[b][i]
                if toks[b][i] >= 0 and (j < 0 or ok[j]) and toks[b][i] == tops[b][j + 1]:
                    ok[i], last = True, i
                    acc.append(i)
            if acc:
                path[b, : len(acc)] = torch.tensor(acc)
            num[b], nxt[b] = len(acc), tops[b][last + 1]
            bonus[b] = not any(par[b][i] == last and toks[b][i] >= 0 for i in range(N))
        return VerifyResult(path, num, nxt, bonus)
