"""How one draft token is drawn from its law q, per draft kind, with the production noise.

This is the noise discipline the verifiers assume and `certify.sampled.toy_drafts` tests;
every sampling drafter draws through `ChildSampler` so the two can never drift apart.
For draft j (0..k-1) at depth t (0..gamma-1) of a budget-gamma request:

* ``iid``:    inverse CDF of q with the step-keyed uniform `noise.uniform(DRAFT, j * gamma + t)`;
* ``wor``:    the k root children sequentially without replacement (q with the tokens already
              drawn zeroed, uniform slot `j * gamma`; -1 when q's support is exhausted), deeper
              tokens as ``iid``;
* ``onehot``: the j-th most likely root token (stable order; -1 past q's support), then greedy;
* ``gumbel``: the exponential race on draft j's own position-keyed noise row at absolute
              position `position + t`: `noise.race(t, q, [j])` (Gumbel-max: Daliri et al.
              arXiv 2408.07978; list version: Rowan et al. arXiv 2506.05632).

At temperature 0 q is one-hot and every kind returns its argmax (wor: one draft, then -1).
"""
from __future__ import annotations

import torch

from ..noise import Purpose, StepNoise
from ..tree import DRAFT_KINDS
from ..verify.base import sample_categorical


class ChildSampler:
    """Draws the draft tokens of one request's iteration (noise batch 1, budget gamma)."""

    def __init__(self, noise: StepNoise, kind: str, gamma: int):
        if kind not in DRAFT_KINDS:
            raise ValueError(f"kind must be one of {DRAFT_KINDS}, got {kind!r}")
        if noise.batch != 1:
            raise ValueError(f"ChildSampler takes the noise of one request, got a batch of {noise.batch}")
        self.noise, self.kind, self.gamma = noise, kind, gamma
        self._drawn: torch.Tensor | None = None  # [1, V] root tokens already drawn (wor)

    def __call__(self, q: torch.Tensor, j: int, t: int) -> int:
        """Token of draft j at depth t drawn from q [1, V] (float64, sums to 1); -1 = no token."""
        kind = self.kind
        if kind == "iid" or (kind == "wor" and t > 0):
            return int(sample_categorical(q, self.noise.uniform(Purpose.DRAFT, j * self.gamma + t))[0])
        if kind == "wor":
            if self._drawn is None:
                self._drawn = torch.zeros(q.shape, dtype=torch.bool)
            rest = torch.where(self._drawn, 0.0, q)  # [1, V]
            if not rest.sum() > 0:
                return -1
            x = int(sample_categorical(rest, self.noise.uniform(Purpose.DRAFT, j * self.gamma))[0])
            self._drawn[0, x] = True
            return x
        if kind == "onehot":
            if t > 0 or j == 0:
                return int(q[0].argmax())  # the first maximum, as a stable descending sort
            if int((q[0] > 0).sum()) <= j:
                return -1
            return int(q[0].argsort(descending=True, stable=True)[j])
        return int(self.noise.race(t, q, torch.tensor([j]))[0])  # gumbel
