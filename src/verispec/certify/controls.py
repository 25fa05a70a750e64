"""Negative controls: broken rules and broken noise keying the oracle must reject (ALGORITHMS.md §10.5).

Each is a real bug class seen in public engines. `verispec certify --controls` runs them to
show the checks have teeth; the test suite requires every one of them to fail.
"""
from __future__ import annotations

import torch

from ..coupling.maximal import residual
from ..noise import NoiseSource, Purpose, StepNoise, _key, _uniform
from ..tree import DraftTree, VerifyResult
from ..verify.base import sample_categorical
from ..verify.block import Block
from ..verify.gumbel import GumbelList
from ..verify.rrs import SpecInfer, Token


class BlockStopAtFirstFailure(Block):
    """Block verification that stops scanning at the first failed eta_i (biased, TV ~ 0.18)."""

    name = "control:block-first-failure"

    def tau_probs(self, h):
        reach = torch.cumprod(h, 1)  # h_0 = 1: P(tau >= i) = prod_{j <= i} h_j
        return reach * torch.cat([1 - h[:, 1:], torch.ones_like(h[:, :1])], 1)

    def draw_tau(self, h, eta):
        ok = torch.cumprod((eta <= h[:, 1:]).long(), 1)
        return ok.sum(1)


class BlockStandardResidual(Block):
    """Block verification whose recovered token uses max(p - q, 0), not max(w p - q, 0) (vllm-ascend #7807)."""

    name = "control:block-standard-residual"

    def next_law(self, tree, p, d, tau):
        bidx = torch.arange(tree.batch)
        row = d.rows[bidx, tau]
        r, _ = residual(p[bidx, row], tree.q[bidx, row])
        return torch.where((tau == d.L)[:, None], p[bidx, row], r)


class CumprodBlock(Token):
    """'MagicMTP': accept the longest prefix with prod min(1, p/q) >= prod u, standard residual (TV ~ 0.12).

    No closed form: certified through the per-outcome Monte Carlo path, like a user's rule.
    """

    name = "control:cumprod"
    exact_law = False

    def sample(self, tree: DraftTree, p: torch.Tensor, noise: StepNoise) -> VerifyResult:
        B, _, gamma = tree.paths.shape
        nodes = tree.paths[:, 0]
        rows = torch.cat([torch.zeros(B, 1, dtype=torch.int64), nodes.clamp(min=0) + 1], 1)
        bidx = torch.arange(B)[:, None]
        P, Q = p[bidx, rows], tree.q[bidx, rows]
        x = tree.tokens.gather(1, nodes.clamp(min=0))
        ratio = (P[:, :-1].gather(2, x[..., None]) / Q[:, :-1].gather(2, x[..., None]))[..., 0].clamp(max=1)
        u = noise.uniform(Purpose.ACCEPT, torch.arange(gamma).expand(B, gamma))
        ok = (torch.cumprod(ratio, 1) >= torch.cumprod(u, 1)) & (nodes >= 0)
        tau = (ok * torch.arange(1, gamma + 1)).amax(1)
        r, _ = residual(P[bidx[:, 0], tau], Q[bidx[:, 0], tau])
        r = torch.where((tau == gamma)[:, None], P[bidx[:, 0], tau], r)
        y = sample_categorical(r, noise.uniform(Purpose.RESIDUAL, 0))
        path = torch.where(torch.arange(gamma) < tau[:, None], nodes, -1)
        return VerifyResult(path, tau, y, tau == gamma)

    def law(self, tree, p):
        raise NotImplementedError


class SpecInferDedupe(SpecInfer):
    """SpecInfer that merges duplicate i.i.d. drafts into one trial (biased, TV ~ 0.13)."""

    name = "control:specinfer-dedupe"

    def distinct_trials(self, tree):
        return True


class SpecInferWrongMode(SpecInfer):
    """Drafts drawn without replacement, verified by the with-replacement rule (biased, TV ~ 0.46)."""

    name = "control:specinfer-wrong-mode"
    draft_kinds = ("wor",)

    def begin(self, p_u, q_u, x, valid, kind):
        return super().begin(p_u, q_u, x, valid, "iid")


class TokenSoftQ(Token):
    """Deterministic (greedy) drafts verified with the drafter's soft q (biased, TV ~ 0.56)."""

    name = "control:token-soft-q"
    draft_kinds = ("onehot",)

    def begin(self, p_u, q_u, x, valid, kind):
        return super().begin(p_u, q_u, x, valid, "iid")


class GumbelPerRowMatch(GumbelList):
    """GLS that accepts a draft if it equals ITS OWN row's target sample (selection bias)."""

    name = "control:gls-per-row"

    def sample(self, tree, p, noise):
        B, k, gamma = tree.paths.shape
        bidx = torch.arange(B)
        own = torch.stack([noise.race(0, p[:, 0], torch.tensor([j])) for j in range(k)], 1)  # [B, k]
        x = tree.tokens.gather(1, tree.paths[:, :, 0].clamp(min=0))
        match = (x == own) & (tree.paths[:, :, 0] >= 0)
        j = match.to(torch.int8).argmax(1)
        hit = match.any(1)
        y = torch.where(hit, own[bidx, j], own[:, 0])
        path = torch.full((B, gamma), -1, dtype=torch.int64)
        return VerifyResult(path, torch.zeros(B, dtype=torch.int64), y, torch.zeros(B, dtype=torch.bool))


class _AbsolutePositionStep(StepNoise):
    def uniform(self, purpose, slot, n=None):
        slot = torch.as_tensor(slot, dtype=torch.int64)
        lead = (self.batch,) + (1,) * max(slot.dim() - 1, 0)
        key = _key(self.seed, self.request.view(lead), int(purpose), self.position.view(lead) + slot, 0)
        return _uniform(key.expand(self.batch, *slot.shape[1:]) if key.dim() else key.expand(self.batch), n)


class PositionKeyedNoise(NoiseSource):
    """Uniforms keyed by absolute position (position + slot): reused across iterations (§2.6)."""

    def step(self, request, position):
        s = super().step(request, position)
        return _AbsolutePositionStep(s.seed, s.request, s.position)


class _NoPositionStep(StepNoise):
    def row_keys(self, depth, rows, purpose=Purpose.GUMBEL):
        flat = StepNoise(self.seed, self.request, torch.zeros_like(self.position))
        return StepNoise.row_keys(flat, depth, rows, purpose)


class StepKeyedGumbelNoise(NoiseSource):
    """Gumbel noise keyed by depth in the iteration instead of absolute position: reused across iterations."""

    def step(self, request, position):
        s = super().step(request, position)
        return _NoPositionStep(s.seed, s.request, s.position)


# (control rule, the correct rule it breaks, draft kind, k) for the single-iteration checks
RULE_CONTROLS = [
    (BlockStopAtFirstFailure(), "block", "iid", 1),
    (BlockStandardResidual(), "block", "iid", 1),
    (CumprodBlock(), "block", "iid", 1),
    (SpecInferDedupe(), "specinfer", "iid", 2),
    (SpecInferWrongMode(), "specinfer-wor", "wor", 2),
    (TokenSoftQ(), "token", "onehot", 1),
    (GumbelPerRowMatch(), "gls", "gumbel", 2),
]
# (noise source class, rule name, draft kind, k) for the multi-iteration chain checks
NOISE_CONTROLS = [
    (PositionKeyedNoise, "block", "iid", 1),
    (StepKeyedGumbelNoise, "gumbel", "gumbel", 1),
]
