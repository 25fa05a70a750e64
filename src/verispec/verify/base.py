"""What every verifier shares: the contract, input checks, and the one residual sampler.

A verifier is a pure, batched function of tensors (it never sees a model):

    rule(tree: DraftTree, p: Tensor[B, N + 1, V], noise: StepNoise) -> VerifyResult

Rules whose randomness can be integrated out in closed form also expose

    rule.law(tree, p) -> Tensor[B, N + 1, V]   # P(accepted path ends at row r, next token y)

computed from the same decision quantities the sampler uses; `verispec certify` and the
exact tests build the law of an iteration from it (ALGORITHMS.md §0).
"""
from __future__ import annotations

import torch

from ..noise import Purpose, StepNoise
from ..sampling import SamplingParams, probs_from_logits, sample_logits
from ..tree import DraftTree, VerifyResult

_SUM_TOL = 1e-4  # rows of p and q must sum to 1 within this (float32 softmax is ~1e-6 off)


class Verifier:
    """Base class: subclasses set `name`, `draft_kinds`, `max_drafts` and implement `sample`."""

    name: str = "?"
    draft_kinds: tuple[str, ...] = ()
    max_drafts: int | None = None  # 1 for single-draft rules
    needs_q: bool = True  # whether iid/wor drafts must come with their q
    exact_law: bool = True  # whether `law` is available in closed form
    deterministic: bool = False  # consumes no noise
    greedy_target: bool = False  # lossless for the temperature-0 (argmax) target only

    def __call__(self, tree: DraftTree, p: torch.Tensor, noise: StepNoise | None) -> VerifyResult:
        tree, p = check_inputs(self, tree, p)
        if noise is None and not self.deterministic:
            raise ValueError(f"verifier {self.name!r} needs a noise source (noise=None given)")
        if noise is not None and noise.batch != tree.batch:
            raise ValueError(f"noise is for {noise.batch} requests, the tree for {tree.batch}")
        return self.sample(tree, p, noise)

    def sample(self, tree: DraftTree, p: torch.Tensor, noise: StepNoise) -> VerifyResult:
        raise NotImplementedError

    def plain(self, p: torch.Tensor, noise: StepNoise, k: int = 1) -> torch.Tensor:
        """A plain decoding step consistent with this rule: p [B, V] -> token [B].

        Sampling rules draw by inverse CDF (RESIDUAL slot 0 of the step); the Gumbel rules race
        their position-keyed rows (so that speculation on or off gives the same text); greedy
        takes the argmax.
        """
        return sample_categorical(p, noise.uniform(Purpose.RESIDUAL, 0))

    def plain_logits(self, logits: torch.Tensor, params: SamplingParams, noise: StepNoise, k: int = 1) -> int:
        """`plain` for one request from its logits [V] and sampling parameters: the engine's plain step.

        A rule that keeps the inverse-CDF `plain` draws straight from the logits (`sampling.sample_logits`: the
        same law and uniform, without a float64 probability tensor); one that overrides `plain` gets its p.
        """
        if type(self).plain is Verifier.plain:
            return sample_logits(logits, params, noise.uniform_scalar(Purpose.RESIDUAL, 0))
        return int(self.plain(probs_from_logits(logits[None], params), noise, k)[0])

    def law(self, tree: DraftTree, p: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"verifier {self.name!r} has no closed-form law")

    def __repr__(self) -> str:
        return f"<verifier {self.name}>"


def _as_law(name: str, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """x [B, R, V] -> float64 laws; the rows marked in rows [B, R] must be valid probability vectors.

    Two passes (row sums, row minima) find NaN, inf, negative entries and bad sums; a third
    renormalises only when some row is off by more than 1e-12 (float32 softmax is ~1e-7 off).
    """
    x = x.to(torch.float64)
    total = x.sum(-1)
    low = x.amin(-1)
    total_used, low_used = total[rows], low[rows]
    if total_used.numel():
        if not torch.isfinite(total_used).all():
            raise ValueError(f"{name} contains NaN or inf")
        if (low_used < 0).any():
            raise ValueError(f"{name} contains negative probabilities")
        err = (total_used - 1).abs().max().item()
        if err > _SUM_TOL:
            raise ValueError(f"{name} has a row that does not sum to 1 (off by {err:.3g})")
        if err > 1e-12:
            x = x / torch.where(rows, total, 1.0)[..., None]
    return x


def check_inputs(rule: Verifier, tree: DraftTree, p: torch.Tensor) -> tuple[DraftTree, torch.Tensor]:
    """Validate a (tree, p) pair for `rule`; returns them with p (and q) as float64 and rows renormalised."""
    if not isinstance(tree, DraftTree):
        raise ValueError(f"tree must be a DraftTree, got {type(tree).__name__}")
    if tree.kind not in rule.draft_kinds:
        raise ValueError(f"verifier {rule.name!r} cannot verify drafts of kind {tree.kind!r}; "
                         f"it accepts {', '.join(rule.draft_kinds)}")
    if rule.max_drafts is not None and tree.k > rule.max_drafts:
        raise ValueError(f"verifier {rule.name!r} takes at most {rule.max_drafts} draft(s), got k = {tree.k}")
    B, N = tree.tokens.shape
    if B == 0 or N == 0 or not (tree.paths >= 0).any():
        raise ValueError("tree is empty: no draft tokens to verify")
    if tree.paths.shape[0] != B or tree.parent.shape != tree.tokens.shape:
        raise ValueError("tree: tokens, parent and paths disagree on the batch size / node count")
    if not torch.is_tensor(p) or p.dim() != 3 or p.shape[:2] != (B, N + 1):
        raise ValueError(f"p must be [B, N + 1, V] = [{B}, {N + 1}, V], got "
                         f"{tuple(p.shape) if torch.is_tensor(p) else type(p).__name__}")
    V = p.shape[-1]
    real = torch.cat([torch.ones(B, 1, dtype=torch.bool), tree.tokens >= 0], 1)  # [B, N + 1]
    if (tree.tokens >= V).any():
        raise ValueError(f"tree.tokens has a token id >= V = {V}")
    p = _as_law("p", p, real)
    if rule.needs_q and tree.kind in ("iid", "wor"):
        if tree.q is None:
            raise ValueError(f"tree.q is required for drafts of kind {tree.kind!r} (or use kind 'onehot')")
        if tree.q.shape != p.shape:
            raise ValueError(f"tree.q must have the shape of p {tuple(p.shape)}, got {tuple(tree.q.shape)}")
        has_children = torch.zeros(B, N + 1, dtype=torch.bool)
        valid = tree.paths >= 0
        bi, ji, ti = valid.nonzero(as_tuple=True)
        rows = tree.row_of_prefix()[bi, ji, ti]
        has_children[bi, rows] = True
        q = _as_law("q", tree.q, has_children)
        q_tok = q[bi, rows, tree.tokens[bi, tree.paths[bi, ji, ti]]]
        if (q_tok <= 0).any():
            raise ValueError("a drafted token has q = 0: drafts must be sampled from the q they report")
        tree = DraftTree(tree.tokens, tree.parent, tree.paths, q, tree.kind)
    return tree, p


def sample_categorical(r: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw: r [B, V] non-negative weights (not necessarily normalised), u [B] in (0, 1).

    One uniform per draw; a zero-weight token is never returned.
    """
    cdf = r.cumsum(-1)
    total = cdf[:, -1:]
    idx = torch.searchsorted(cdf, u.unsqueeze(-1).to(cdf.dtype) * total, right=True).squeeze(-1)
    # cdf[idx] > u * total >= cdf[idx - 1] forces r[idx] > 0, except when rounding puts u * total
    # at or past the end (u ~ 1): then step back to the last token with positive weight.
    idx = idx.clamp_(max=r.shape[-1] - 1)
    bad = r.gather(-1, idx[:, None])[:, 0] <= 0
    if bad.any():
        last = r.shape[-1] - 1 - (r.flip(-1) > 0).to(torch.int8).argmax(-1)
        idx = torch.where(bad, torch.minimum(idx, last), idx)
    return idx


def first_true(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mask [B, m] -> (index of the first True [B], whether any [B])."""
    anyt = mask.any(-1)
    return mask.to(torch.int8).argmax(-1), anyt
