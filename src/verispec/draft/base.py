"""The drafter contract: `propose` a draft tree, `observe` the verdict.

Like transformers' `CandidateGenerator` (`get_candidates` / `update_candidate_strategy`), a
drafter is two methods behind which any proposal mechanism can sit (prompt lookup, a small
model, the target's own first layers):

    tree = drafter.propose(req, budget)        # DraftTree (batch 1) or None: nothing worth drafting
    ... target scores the tree, a verifier returns `result` ...
    drafter.observe(req, tree, result)         # sync internal state (e.g. roll back a KV cache)

What the verifier may assume about the tree is the drafter's side of the bargain (tree.py):
for kinds 'iid' / 'wor' the q rows are the laws the children were drawn from, after the SAME
sampling transform as the target's p (`probs_from_logits(logits, req.params)`), and the draws
use the noise exactly as `certify.sampled.toy_drafts` does (see `kinds.ChildSampler`).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from ..checks import int_at_least
from ..noise import StepNoise
from ..sampling import SamplingParams
from ..tree import DRAFT_KINDS, DraftTree, VerifyResult


@dataclass
class DraftRequest:
    tokens: list[int]  # the committed context: prompt + generated so far (last = the target's pending token)
    noise: StepNoise  # this iteration's noise, batch of 1 (request id, position = len(generated so far))
    params: SamplingParams  # the user's sampling parameters (the same transform makes q)
    k: int  # number of drafts wanted (1 = a chain)
    kind: str  # draft kind the verifier needs: 'iid' | 'wor' | 'onehot' | 'gumbel'
    # the verifier takes a tree of any number of point-mass drafts (greedy verification at temperature 0),
    # so a drafter may return more than k of them (the head's value tree)
    any_tree: bool = False


class Drafter(ABC):
    """Base class: subclasses set `kinds` and implement `propose` (and `observe` / `reset` if stateful)."""

    kinds: tuple[str, ...] = ()  # draft kinds this drafter can produce
    cheap: bool = False  # proposing costs ~nothing: the engine may propose long and cut the tree
    model_fallback: bool = False  # a cheap drafter that hands over to a model drafter where it finds nothing
    # Optional hook a cheap drafter consults before building a tree: gate(match_length, available)
    # -> draft length to use (0 = do not draft). The engine sets it to its controller's choice.
    gate = None
    # Optional hook a tree drafter consults to size its tree: price(n) -> the cost, in plain steps, of an
    # iteration whose tree has n nodes (the target's pass and the drafting). The engine sets it from its controller.
    price = None
    # Seconds the last `propose` spent catching up on context it had not seen (a draft model prefilling
    # the tokens of plain steps): a one-off cost of resuming speculation, not a cost per drafted token,
    # so the engine's controller leaves it out of the per-iteration overhead it learns.
    catchup_s: float = 0.0

    @abstractmethod
    def propose(self, req: DraftRequest, budget: int) -> DraftTree | None:
        """A DraftTree (batch 1, drafts of length <= budget) of kind `req.kind`, or None."""

    def observe(self, req: DraftRequest, tree: DraftTree, result: VerifyResult) -> None:
        """After verification of `tree` (proposed for `req`): sync state. Default: nothing to do."""

    def reset(self) -> None:
        """Forget everything about the current request (a new one starts). Default: nothing to do."""

    def prepare(self, tokens: list[int]) -> None:
        """A new request's prompt (last = the target's pending token), before the first propose: do the
        per-request work now, timed with the target's prefill rather than charged to the first draft
        (`ModelDrafter` and `LookupThenModel` do none: their draft model prefills when it first drafts, as a
        request may never draft). Default: nothing to do."""

    def check_request(self, req: DraftRequest, budget: int) -> None:
        """Raise ValueError unless this drafter can serve `req` with `budget`."""
        if not int_at_least(budget, 1):
            raise ValueError(f"budget must be an int >= 1, got {budget!r}")
        if req.kind not in DRAFT_KINDS:
            raise ValueError(f"draft kind must be one of {DRAFT_KINDS}, got {req.kind!r}")
        if req.kind not in self.kinds:
            raise ValueError(f"{type(self).__name__} produces drafts of kind {', '.join(self.kinds)}, "
                             f"not {req.kind!r}")
        if not isinstance(req.k, int) or req.k < 1:
            raise ValueError(f"k must be an int >= 1, got {req.k!r}")
        if not req.tokens:
            raise ValueError("the context is empty: it holds at least the target's pending token")
        if req.noise.batch != 1:
            raise ValueError(f"drafters take the noise of one request, got a batch of {req.noise.batch}")


def accepted_context(req: DraftRequest, tree: DraftTree, result: VerifyResult) -> list[int]:
    """The committed context after verification: req.tokens + accepted tokens + the next token."""
    toks, count = result.output(tree)  # [1, gamma + 1], [1]
    return list(req.tokens) + toks[0, : int(count[0])].tolist()


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]: bisect with slice compares (C speed)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo
