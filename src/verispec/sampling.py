"""Sampling transforms: logits -> the distribution a token is drawn from.

One module, applied identically to the target (p) and the draft (q): the drafter samples
from exactly the q it reports and the verifier judges against exactly the p the user asked
for (ALGORITHMS.md §1 pitfall 1, HF transformers #47932). Order, as in vLLM: temperature,
then top-k, then top-p, then min-p. Temperature 0 is greedy: a point mass on the first
argmax. Top-p keeps the smallest prefix of the descending order reaching top_p, ties broken by
the lower token id (so the law is defined even where tied tokens straddle the cut).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .draw import draw


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    min_p: float = 0.0  # 0 = off

    def __post_init__(self):
        t, k, tp, mp = self.temperature, self.top_k, self.top_p, self.min_p
        if not (isinstance(t, (int, float)) and t >= 0 and t == t and t != float("inf")):
            raise ValueError(f"temperature must be a finite number >= 0, got {t!r}")
        if not (isinstance(k, int) and k >= 0):
            raise ValueError(f"top_k must be an int >= 0 (0 = off), got {k!r}")
        if not (isinstance(tp, (int, float)) and 0 < tp <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {tp!r}")
        if not (isinstance(mp, (int, float)) and 0 <= mp < 1):
            raise ValueError(f"min_p must be in [0, 1), got {mp!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @classmethod
    def from_args(cls, args) -> SamplingParams:
        """From the parsed flags of `cli_args.add_sampling_args` (ValueError for bad values)."""
        return cls(args.temperature, args.top_k, args.top_p, args.min_p)


def probs_from_logits(logits: torch.Tensor, params: SamplingParams = SamplingParams(),
                      dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """logits [..., V] (any float dtype) -> probabilities [..., V] in `dtype`, rows sum to 1.

    With top-k (taken on the logits as given; tokens tied with the k-th are kept too) the rest runs on the k
    candidates of each row, in token-id order, and is scattered back: the same law, without a softmax, a top-p
    search and a min-p cut over all V (SmolLM2's 49,152: ~0.2 against ~1 ms a row). Rows where tokens beyond
    the k-th tie with it take the full path."""
    if logits.dim() == 0 or logits.shape[-1] == 0:
        raise ValueError(f"logits must be [..., V] with V >= 1, got shape {tuple(logits.shape)}")
    if torch.isnan(logits.amax()):  # max propagates NaN: one reduction, not a mask of V entries a row
        raise ValueError("logits contain NaN")
    if params.greedy:
        x = logits.to(dtype)
        return torch.zeros_like(x).scatter_(-1, x.argmax(-1, keepdim=True), 1.0)
    kth = None
    if 0 < params.top_k < logits.shape[-1]:
        vals, idx = logits.topk(params.top_k, dim=-1)
        kth = vals[..., -1:]
        if bool(((logits >= kth).sum(-1) == params.top_k).all()):  # no ties beyond the k-th: candidates decide
            idx = idx.sort(-1).values
            rest = SamplingParams(params.temperature, 0, params.top_p, params.min_p)
            sub = probs_from_logits(logits.gather(-1, idx), rest, dtype)
            return torch.zeros(logits.shape, dtype=dtype, device=logits.device).scatter_(-1, idx, sub)
    x = logits.to(dtype, copy=True)  # ours to scale in place
    if kth is not None:
        x.masked_fill_(x < kth.to(dtype), float("-inf"))
    if params.temperature != 1:
        x.div_(params.temperature)
    probs = torch.softmax(x, dim=-1)
    if params.top_p < 1:
        probs = _top_p(probs, params.top_p)
    if params.min_p > 0:
        cut = params.min_p * probs.amax(-1, keepdim=True)
        probs = torch.where(probs < cut, 0.0, probs)
    if params.top_p < 1 or params.min_p > 0:  # softmax alone is normalised already
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def _top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """probs [..., V] with every token dropped but the smallest prefix of the descending order (ties by lower
    token id first) whose mass reaches top_p; not renormalised.

    The prefix is found among the top c tokens (c = 64, then 1,024, then all V: a full sort), which decide it
    when their mass reaches top_p before their smallest value (all tokens tied with the last one kept are then
    among them, in the same order a full sort gives). On SmolLM2's 49,152 logits a full sort cost ~5.5 ms, a
    plain step's half; the top 64 usually decide.
    """
    V = probs.shape[-1]
    flat = probs.reshape(-1, V)
    for c in (64, 1024, V):
        c = min(c, V)
        idx = flat.topk(c, dim=-1, sorted=False).indices.sort(-1).values  # the top c, by token id
        vals, perm = flat.gather(-1, idx).sort(dim=-1, descending=True, stable=True)  # by value, ties by id
        before = vals.cumsum(-1) - vals  # mass strictly before each token
        keep = before < top_p
        n_keep = keep.sum(-1)  # >= 1: the first has nothing before it
        if c == V or _decided(vals, n_keep):
            break
    out = torch.zeros_like(flat).scatter_(-1, idx.gather(-1, perm), torch.where(keep, vals, 0.0))
    return out.reshape(probs.shape)


def _decided(vals: torch.Tensor, n_keep: torch.Tensor) -> bool:
    """Whether the top c tokens of every row (vals [R, c], descending) decide its top-p prefix (n_keep [R]
    tokens): the prefix ends before the last candidate and its smallest value is above the candidates' smallest,
    so no token outside them ties with a kept one."""
    last = vals.gather(-1, (n_keep - 1)[:, None])[:, 0]  # the smallest kept probability
    return bool(((n_keep < vals.shape[-1]) & (last > vals[:, -1])).all())


_BLOCK = 256  # tokens per block of `inverse_cdf`'s two-level search


def sample_logits(logits: torch.Tensor, params: SamplingParams, u: float) -> int:
    """One inverse-CDF draw from ``probs_from_logits(logits, params)`` with the uniform u in (0, 1): the engine's
    sampled plain step. logits [V], float32 (a view of the backend's buffer is fine: it is read, never written).

    Without top-k, top-p or min-p the law is a softmax, not normalised here: the weights exp(float64(x - max) /
    temperature) and a two-level search (`inverse_cdf`): in one C call where `draw.kernel` builds (0.15 ms after a
    llama.cpp pass on SmolLM2's 49,152 logits, 2 cores), else in torch and numpy (0.5 ms there; torch's vectorised
    float64 exp: ~0.15 ms of it), where the float64 softmax, cumsum and searchsorted over a copy took ~0.8 ms.
    With top-k, top-p or min-p the row goes through `probs_from_logits` (with top-k, on its k candidates).
    """
    if logits.dim() != 1 or logits.shape[0] == 0:
        raise ValueError(f"logits must be [V] with V >= 1, got shape {tuple(logits.shape)}")
    if params.greedy:
        return int(logits.argmax())
    if params.top_k or params.top_p < 1 or params.min_p > 0:
        return inverse_cdf(probs_from_logits(logits, params).numpy(), u)
    token = draw(logits.detach(), params.temperature, u)  # the same search in one C call (`draw.py`), if built
    if token is not None:
        return token
    w = logits.detach().to(torch.float64)  # a copy: the backend's buffer is never written
    m = float(w.max())
    if not math.isfinite(m):  # NaN propagates through max; all -inf or a +inf logit leave no finite softmax
        raise ValueError("logits contain NaN" if m != m else f"logits have no finite softmax (max {m})")
    w -= m
    if params.temperature != 1:
        w *= 1.0 / params.temperature
    return inverse_cdf(w.exp_().numpy(), u)


def inverse_cdf(w: np.ndarray, u: float) -> int:
    """The token i with C(i - 1) <= u C(V) < C(i), C the cumulative sum of the non-negative weights w [V] (not
    necessarily normalised); a zero-weight token is never returned.

    Two levels: the sums of blocks of 256 weights, then one block's own cumulative sum, so only 256 + V / 256
    running sums are formed (in float64) instead of V.
    """
    V = w.shape[0]
    full = V - V % _BLOCK
    sums = w[:full].reshape(-1, _BLOCK).sum(1)
    if full < V:
        sums = np.append(sums, w[full:].sum())
    cum = np.cumsum(sums)
    if not cum[-1] > 0:
        raise ValueError("the weights have no positive mass")
    target = u * cum[-1]
    b = int(np.searchsorted(cum, target, side="right"))
    if b >= len(cum):  # rounding put u * total at the end (u ~ 1): the last block with mass
        b = int(np.flatnonzero(sums > 0)[-1])
    lo = b * _BLOCK
    block = w[lo:lo + _BLOCK]
    rest = target - (cum[b - 1] if b else 0.0)
    j = min(int(np.searchsorted(np.cumsum(block), rest, side="right")), len(block) - 1)
    if not block[j] > 0:  # only when rounding between the block's sum and its running sums put rest past the
        j = int(np.flatnonzero(block > 0)[-1])  # end (j clamped): the block's last token with mass
    return lo + j
