"""Gumbel-max verification: drafter-invariant decoding and its list / multi-draft form.

* gumbel  Daliri, Musco, Suresh (arXiv 2408.07978, ISIT 2025), drafter-invariant speculative
          decoding: the token at absolute position t is always the target's exponential-race
          sample argmin_x E_t[x] / p(x | prefix), E_t = Exp(1) noise keyed by (seed, request,
          t). A draft token is accepted iff it equals that sample; on a mismatch the target's
          sample is emitted. No residual: the output equals target-only Gumbel sampling with the
          same seed, whatever the drafter (ALGORITHMS.md §5 d).
* gls     Gumbel-max list sampling, Rowan, Phan, Khisti (arXiv 2506.05632), Algorithm 2: K noise
          rows per position, draft k drawn (ideally) with row k; Y_t = argmin_x min_{k in S}
          E_t[k, x] / p(x | Y_<t) over the surviving drafts S, which then shrink to those with
          X_k[t] = Y_t. `strong=True` takes the minimum over all K rows (Proposition 6: strong
          drafter invariance, at some cost in acceptance).

Any draft kind is lossless here (the output never depends on q); drafts of kind "gumbel",
drawn with the same rows, are the ones that get accepted often. Acceptance per position is
the Gumbel match probability sum_x 1 / sum_y max(p_y/p_x, q_y/q_x) <= 1 - TV.
"""
from __future__ import annotations

import torch

from ..noise import StepNoise
from ..race import lazy_race
from ..tree import DraftTree, VerifyResult
from .base import Verifier


class GumbelList(Verifier):
    name = "gls"
    draft_kinds = ("iid", "wor", "onehot", "gumbel")
    needs_q = False
    exact_law = False

    def __init__(self, strong: bool = False):
        self.strong = strong
        if strong:
            self.name = "gls-strong"

    def sample(self, tree: DraftTree, p: torch.Tensor, noise: StepNoise) -> VerifyResult:
        B, k, gamma = tree.paths.shape
        bidx = torch.arange(B)
        if k == 1:  # a chain: the target's sample at every row in one lazy race (all may be needed)
            R, V = p.shape[1], p.shape[2]
            keys = noise.row_keys(tree.depth().clamp(min=0), 1)  # [B, R, 1]
            y_row = lazy_race(p.reshape(B * R, V), keys.view(B * R, 1)).view(B, R)
        cur = torch.zeros(B, dtype=torch.int64)
        alive = torch.ones(B, k, dtype=torch.bool)
        done = torch.zeros(B, dtype=torch.bool)
        path = torch.full((B, gamma), -1, dtype=torch.int64)
        tau = torch.zeros(B, dtype=torch.int64)
        next_token = torch.full((B,), -1, dtype=torch.int64)
        bonus = torch.zeros(B, dtype=torch.bool)
        for t in range(gamma + 1):
            if k == 1:
                y = y_row[bidx, cur]
            else:  # min over the rows of the surviving drafts S (all rows if strong)
                y = noise.race(t, p[bidx, cur], k, None if self.strong else alive)
            if t < gamma:
                nodes = tree.paths[:, :, t]
                x = tree.tokens.gather(1, nodes.clamp(min=0))
                has = alive & (nodes >= 0)
                match = has & (x == y[:, None])
            else:
                nodes = torch.zeros(B, k, dtype=torch.int64)
                has = match = torch.zeros(B, k, dtype=torch.bool)
            accepted = match.any(1) & ~done
            stop = ~accepted & ~done
            next_token = torch.where(stop, y, next_token)
            bonus |= stop & ~has.any(1)
            done |= stop
            if accepted.any():
                node = nodes[bidx, match.to(torch.int8).argmax(1)]
                path[accepted, t] = node[accepted]
                tau += accepted.long()
                cur = torch.where(accepted, node + 1, cur)
                alive &= ~accepted[:, None] | match
            if done.all():
                break
        return VerifyResult(path, tau, next_token, bonus)


    def plain(self, p, noise, k=1):
        """No draft: the race over all K rows (S = every draft, as at the root)."""
        return noise.race(0, p, k)


class Gumbel(GumbelList):
    """Single-draft drafter-invariant decoding (Daliri et al. arXiv 2408.07978)."""

    name = "gumbel"
    max_drafts = 1
