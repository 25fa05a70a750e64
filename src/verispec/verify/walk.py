"""Node-by-node verification of a draft tree: the shared walk of greedy, token, SpecInfer and SpecTr.

These rules decide at one node at a time. At a node u with target law p_u the trials are the
drafts that reached u (every draft for i.i.d. drafts, duplicates included; the distinct children
for without-replacement and deterministic drafts), tested in draw order. A rule is four
deterministic functions of (p_u, q_u, trial tokens):

    begin(...)          -> state           per-node quantities (e.g. SpecTr's rho*)
    accept_prob(s, i)   -> a_i             P(trial i accepted | trials < i rejected)
    reject(s, i, rows)                     update after trial i is rejected (e.g. p <- residual)
    recovered(s)        -> r               law of the next token when every trial is rejected
                                           (p_u itself at a leaf: the bonus token)

The sampler calls them lazily, so O(V) work happens only on rejections (uniform ACCEPT slot
t * k + j for draft j at depth t, RESIDUAL slot t for the recovered / bonus token). A single
chain takes a vectorised fast path over all depths, with the same four functions. `walk_law`
integrates the same functions in closed form (ALGORITHMS.md §0); the exact tests check it.
"""
from __future__ import annotations

import torch

from ..noise import Purpose, StepNoise
from ..tree import DraftTree, VerifyResult
from .base import Verifier, check_inputs, first_true, sample_categorical


def first_occurrence(nodes: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """nodes, valid [..., k]: keep only the first valid trial of each distinct node."""
    same = (nodes.unsqueeze(-1) == nodes.unsqueeze(-2)) & valid.unsqueeze(-2)  # [..., k(i), k(j)]
    earlier = torch.ones(nodes.shape[-1], nodes.shape[-1], dtype=torch.bool).tril(-1)
    return valid & ~(same & earlier).any(-1)


class NodeRule(Verifier):
    """A rule that decides node by node; subclasses implement the four functions above."""

    def distinct_trials(self, tree: DraftTree) -> bool:
        """Whether the trials at a node are its distinct children (True) or every draft (i.i.d.)."""
        return tree.kind != "iid"

    def begin(self, p_u: torch.Tensor, q_u: torch.Tensor | None, x: torch.Tensor, valid: torch.Tensor,
              kind: str):
        """p_u [R, V]; q_u [R, V] or None; x [R, m] trial tokens; valid [R, m] bool -> state."""
        raise NotImplementedError

    def accept_prob(self, s, i: int) -> torch.Tensor:
        raise NotImplementedError

    def reject(self, s, i: int, rows: torch.Tensor) -> None:
        pass

    def recovered(self, s) -> torch.Tensor:
        raise NotImplementedError

    # ---- sampler -------------------------------------------------------------------------
    def sample(self, tree: DraftTree, p: torch.Tensor, noise: StepNoise | None) -> VerifyResult:
        if tree.k == 1:
            return self._sample_chain(tree, p, noise)
        B, k, gamma = tree.paths.shape
        bidx = torch.arange(B)
        cur = torch.zeros(B, dtype=torch.int64)  # current row (0 = root)
        alive = torch.ones(B, k, dtype=torch.bool)  # drafts whose prefix is the accepted path
        done = torch.zeros(B, dtype=torch.bool)
        path = torch.full((B, gamma), -1, dtype=torch.int64)
        tau = torch.zeros(B, dtype=torch.int64)
        next_token = torch.full((B,), -1, dtype=torch.int64)
        bonus = torch.zeros(B, dtype=torch.bool)
        if not self.deterministic:  # every ACCEPT uniform of the walk at once (slot t * k + j)
            u_all = noise.uniform(Purpose.ACCEPT, torch.arange(gamma * k).expand(B, gamma * k))
        for t in range(gamma + 1):
            if t < gamma:
                nodes = tree.paths[:, :, t]
                valid = alive & (nodes >= 0) & ~done[:, None]
                if self.distinct_trials(tree):
                    valid = first_occurrence(nodes, valid)
            else:
                nodes = torch.zeros(B, k, dtype=torch.int64)
                valid = torch.zeros(B, k, dtype=torch.bool)
            x = tree.tokens.gather(1, nodes.clamp(min=0))
            s = self.begin(p[bidx, cur], None if tree.q is None else tree.q[bidx, cur], x, valid, tree.kind)
            testing = ~done
            hit_j = torch.full((B,), -1, dtype=torch.int64)
            for i in range(k):
                v = valid[:, i] & testing
                if not v.any():
                    continue
                a = self.accept_prob(s, i)
                hit = v & (a >= 1 if self.deterministic else u_all[:, t * k + i] < a)
                hit_j = torch.where(hit, i, hit_j)
                testing &= ~hit
                if (v & ~hit).any():
                    self.reject(s, i, v & ~hit)
            accepted = hit_j >= 0
            if accepted.any():
                node = nodes[bidx, hit_j.clamp(min=0)]
                path[accepted, t] = node[accepted]
                tau += accepted.long()
                cur = torch.where(accepted, node + 1, cur)
                alive &= ~accepted[:, None] | (nodes == node[:, None])
            if testing.any():  # every trial rejected (or none left): recovered or bonus token
                y = self._draw(self.recovered(s), noise, t)
                next_token = torch.where(testing, y, next_token)
                bonus |= testing & ~valid.any(1)
                done |= testing
            if done.all():
                break
        return VerifyResult(path, tau, next_token, bonus)

    def _draw(self, r: torch.Tensor, noise: StepNoise | None, t: int) -> torch.Tensor:
        if self.deterministic:
            return r.argmax(-1)
        return sample_categorical(r, noise.uniform(Purpose.RESIDUAL, t))

    def _sample_chain(self, tree: DraftTree, p: torch.Tensor, noise: StepNoise | None) -> VerifyResult:
        """One draft: every depth's single trial is tested at once; O(V) work only where it stops."""
        B, _, gamma = tree.paths.shape
        nodes = tree.paths[:, 0]  # [B, gamma]
        valid = nodes >= 0
        rows = torch.cat([torch.zeros(B, 1, dtype=torch.int64), nodes.clamp(min=0) + 1], 1)  # [B, gamma + 1]
        bidx = torch.arange(B)[:, None]
        x = tree.tokens.gather(1, nodes.clamp(min=0))
        q_rows = None if tree.q is None else tree.q[bidx, rows[:, :-1]].reshape(B * gamma, -1)
        s = self.begin(p[bidx, rows[:, :-1]].reshape(B * gamma, -1), q_rows, x.reshape(-1, 1),
                       valid.reshape(-1, 1), tree.kind)
        a = self.accept_prob(s, 0).view(B, gamma)
        if self.deterministic:
            hit = a >= 1
        else:
            hit = noise.uniform(Purpose.ACCEPT, (torch.arange(gamma) * tree.k).expand(B, gamma)) < a
        fail, any_fail = first_true(~(hit & valid))
        tau = torch.where(any_fail, fail, gamma)  # first rejected depth, or the end of the draft
        bonus = ~valid.gather(1, tau.clamp(max=gamma - 1)[:, None])[:, 0] | (tau == gamma)
        stop_row = rows.gather(1, tau[:, None])[:, 0]
        x_stop = x.gather(1, tau.clamp(max=gamma - 1)[:, None])
        s = self.begin(p[bidx[:, 0], stop_row], None if tree.q is None else tree.q[bidx[:, 0], stop_row],
                       x_stop, ~bonus[:, None], tree.kind)
        if (~bonus).any():
            self.reject(s, 0, ~bonus)
        r = self.recovered(s)
        if self.deterministic:
            y = r.argmax(-1)
        else:  # keyed by depth, as in the tree walk, so both paths draw the same numbers
            y = sample_categorical(r, noise.uniform(Purpose.RESIDUAL, tau))
        path = torch.where(torch.arange(gamma) < tau[:, None], nodes, -1)
        return VerifyResult(path, tau, y, bonus)

    # ---- exact law ---------------------------------------------------------------------------
    def law(self, tree: DraftTree, p: torch.Tensor) -> torch.Tensor:
        tree, p = check_inputs(self, tree, p)
        return walk_law(self, tree, p)


def walk_law(rule: NodeRule, tree: DraftTree, p: torch.Tensor) -> torch.Tensor:
    """Exact law [B, N + 1, V] of (row where the accepted path ends, next token)."""
    B, k, _ = tree.paths.shape
    R, V = p.shape[1], p.shape[2]
    real = torch.cat([torch.ones(B, 1, dtype=torch.bool), tree.tokens >= 0], 1)
    p = torch.where(real[..., None], p, 1.0 / V)  # padding rows: harmless
    q = None if tree.q is None else torch.where(real[..., None], tree.q, 1.0 / V)
    trials = torch.full((B, R, k), -1, dtype=torch.int64)  # node reached by draft j from row r
    bi, ji, ti = (tree.paths >= 0).nonzero(as_tuple=True)
    trials[bi, tree.row_of_prefix()[bi, ji, ti], ji] = tree.paths[bi, ji, ti]
    valid = trials >= 0
    if rule.distinct_trials(tree):
        valid = first_occurrence(trials, valid)
    x = tree.tokens.gather(1, trials.clamp(min=0).view(B, R * k)).view(B * R, k)
    valid = valid.view(B * R, k)
    s = rule.begin(p.reshape(B * R, V), None if q is None else q.reshape(B * R, V), x, valid, tree.kind)
    a = torch.zeros(B * R, k, dtype=p.dtype)
    for i in range(k):
        a[:, i] = torch.where(valid[:, i], rule.accept_prob(s, i), 0.0)
        rule.reject(s, i, valid[:, i])
    a = a.view(B, R, k)
    survive = torch.cumprod(1 - a, -1)
    acc = a * torch.cat([torch.ones(B, R, 1, dtype=a.dtype), survive[..., :-1]], -1)  # P(trial j accepted)
    stop = survive[..., -1]  # P(every trial at the row rejected)
    r = rule.recovered(s).view(B, R, V)
    reach = torch.zeros(B, R, dtype=p.dtype)
    reach[:, 0] = 1
    law = torch.zeros(B, R, V, dtype=p.dtype)
    for row in range(R):  # parents precede children
        law[:, row] = (reach[:, row] * stop[:, row])[:, None] * r[:, row]
        reach.scatter_add_(1, trials[:, row].clamp(min=0) + 1, reach[:, row : row + 1] * acc[:, row])
    return law
