"""Node-by-node verification of a draft tree: the shared walk of greedy, token, SpecInfer and SpecTr.

These rules decide at one node at a time. At a node u with target law p_u, the trials are
the drafts that reached u (every draft for i.i.d. drafts, duplicates included; the distinct
children for without-replacement and deterministic drafts), in draw order. A rule's
*decision* at u is deterministic given the trial tokens:

    a[i]  probability that trial i is accepted given trials 0..i-1 were rejected
    r     the law of the recovered token if every trial is rejected (p_u itself at a leaf:
          that token is then the bonus token)

The sampler below consumes noise to walk down the tree (uniform ACCEPT slot t*k + j for
draft j at depth t, RESIDUAL slot t for the recovered / bonus token); `walk_law` integrates
the same decisions in closed form (ALGORITHMS.md §0), which is what the exact tests check.
"""
from __future__ import annotations

import torch

from ..noise import Purpose, StepNoise
from ..tree import DraftTree, VerifyResult
from .base import Verifier, first_true, sample_categorical


def first_occurrence(nodes: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """nodes, valid [..., k]: keep only the first valid trial of each distinct node."""
    same = (nodes.unsqueeze(-1) == nodes.unsqueeze(-2)) & valid.unsqueeze(-2)  # [..., k(i), k(j)]: j same as i
    earlier = torch.ones(nodes.shape[-1], nodes.shape[-1], dtype=torch.bool).tril(-1)
    return valid & ~(same & earlier).any(-1)


class NodeRule(Verifier):
    """A rule that decides node by node; subclasses implement `decide`."""

    def distinct_trials(self, tree: DraftTree) -> bool:
        """Whether the trials at a node are its distinct children (True) or every draft (i.i.d.)."""
        return tree.kind != "iid"

    def decide(self, p_u: torch.Tensor, q_u: torch.Tensor | None, x: torch.Tensor, valid: torch.Tensor,
               kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """p_u [R, V] target law at the node; q_u [R, V] or None (onehot); x [R, m] trial tokens;
        valid [R, m] bool. Returns (a [R, m] conditional acceptance, r [R, V] recovered-token law)."""
        raise NotImplementedError

    def sample(self, tree: DraftTree, p: torch.Tensor, noise: StepNoise | None) -> VerifyResult:
        B, k, gamma = tree.paths.shape
        bidx = torch.arange(B)
        dedupe = self.distinct_trials(tree)
        cur = torch.zeros(B, dtype=torch.int64)  # current row (0 = root)
        alive = torch.ones(B, k, dtype=torch.bool)  # drafts whose prefix is the accepted path
        done = torch.zeros(B, dtype=torch.bool)
        path = torch.full((B, gamma), -1, dtype=torch.int64)
        tau = torch.zeros(B, dtype=torch.int64)
        next_token = torch.full((B,), -1, dtype=torch.int64)
        bonus = torch.zeros(B, dtype=torch.bool)
        slots = torch.arange(k)
        for t in range(gamma + 1):
            if t < gamma:
                nodes = tree.paths[:, :, t]
                valid = alive & (nodes >= 0) & ~done.unsqueeze(1)
                if dedupe:
                    valid = first_occurrence(nodes, valid)
            else:
                nodes = torch.zeros(B, k, dtype=torch.int64)
                valid = torch.zeros(B, k, dtype=torch.bool)
            x = tree.tokens.gather(1, nodes.clamp(min=0))
            q_u = tree.q[bidx, cur] if tree.q is not None else None
            a, r = self.decide(p[bidx, cur], q_u, x, valid, tree.kind)
            if self.deterministic:
                hit = valid & (a >= 1)
            else:
                hit = valid & (noise.uniform(Purpose.ACCEPT, t * k + slots.expand(B, k)) < a)
            j, accepted = first_true(hit)
            accepted &= ~done
            stop = ~accepted & ~done
            if accepted.any():
                node = nodes[bidx, j]
                path[accepted, t] = node[accepted]
                tau += accepted.long()
                cur = torch.where(accepted, node + 1, cur)
                alive &= ~accepted.unsqueeze(1) | (nodes == node.unsqueeze(1))
            if stop.any():
                if self.deterministic:
                    y = r.argmax(-1)
                else:
                    y = sample_categorical(r, noise.uniform(Purpose.RESIDUAL, t))
                next_token = torch.where(stop, y, next_token)
                bonus |= stop & ~valid.any(1)
                done |= stop
            if done.all():
                break
        return VerifyResult(path, tau, next_token, bonus)

    def law(self, tree: DraftTree, p: torch.Tensor) -> torch.Tensor:
        from .base import check_inputs

        tree, p = check_inputs(self, tree, p)
        return walk_law(self, tree, p)


def walk_law(rule: NodeRule, tree: DraftTree, p: torch.Tensor) -> torch.Tensor:
    """Exact law [B, N + 1, V] of (row where the accepted path ends, next token)."""
    B, k, gamma = tree.paths.shape
    R, V = p.shape[1], p.shape[2]
    real = torch.cat([torch.ones(B, 1, dtype=torch.bool), tree.tokens >= 0], 1)
    p = torch.where(real.unsqueeze(-1), p, torch.full_like(p, 1.0 / V))  # padding rows: harmless
    q = tree.q
    if q is not None:
        q = torch.where(real.unsqueeze(-1), q, torch.full_like(q, 1.0 / V))
    # trials[b, r, j]: node reached by draft j from row r (or -1)
    trials = torch.full((B, R, k), -1, dtype=torch.int64)
    bi, ji, ti = (tree.paths >= 0).nonzero(as_tuple=True)
    trials[bi, tree.row_of_prefix()[bi, ji, ti], ji] = tree.paths[bi, ji, ti]
    valid = trials >= 0
    if rule.distinct_trials(tree):
        valid = first_occurrence(trials, valid)
    x = tree.tokens.gather(1, trials.clamp(min=0).view(B, R * k)).view(B, R, k)
    a, r = rule.decide(p.reshape(B * R, V), None if q is None else q.reshape(B * R, V),
                       x.view(B * R, k), valid.view(B * R, k), tree.kind)
    a = torch.where(valid.view(B * R, k), a, 0.0).view(B, R, k)
    survive = torch.cumprod(1 - a, -1)
    acc = a * torch.cat([torch.ones(B, R, 1, dtype=a.dtype), survive[..., :-1]], -1)  # P(trial j accepted)
    stop = survive[..., -1]  # P(every trial at the row rejected)
    r = r.view(B, R, V)
    reach = torch.zeros(B, R, dtype=p.dtype)
    reach[:, 0] = 1
    law = torch.zeros(B, R, V, dtype=p.dtype)
    for row in range(R):  # parents precede children
        law[:, row] = (reach[:, row] * stop[:, row]).unsqueeze(-1) * r[:, row]
        child = trials[:, row].clamp(min=0) + 1
        reach.scatter_add_(1, child, reach[:, row : row + 1] * acc[:, row])
    return law
