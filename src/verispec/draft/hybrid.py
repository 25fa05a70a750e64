"""Prompt lookup where the text repeats itself, a draft model everywhere else.

Neither drafter wins on every kind of prompt. On Spec-Bench with SmolLM2-135M as a BF16 torch
target (2 CPU cores, greedy), prompt lookup is ~3x faster than plain decoding on rag and ~2.2x
on translation but ~1.1x on coding and reasoning, where the answer does not copy the prompt; a
Q4_0 copy of the target run by llama.cpp accepts ~0.8 per token on every category but costs a
fifth of a target step per drafted token. Lookup costs ~0.1 ms, so it is tried first, gated by
the engine's controller on its match length exactly as `NGramDrafter` is; when it has nothing
worth drafting, the model drafts as far as the controller allows for the draft-model bucket
(match length 0), whose acceptance and overhead it learns apart from the lookup's.

Drafts are point masses (kind 'onehot'): the model's argmax, or the tokens that followed the
match. The verifier treats both alike, so the output law is the target's whichever drafted.
"""
from __future__ import annotations

from ..tree import DraftTree, VerifyResult
from .base import DraftRequest, Drafter
from .model import ModelDrafter
from .ngram import NGramDrafter


class LookupThenModel(Drafter):
    """`NGramDrafter` first, `ModelDrafter` (or early exit) when the lookup has no draft worth verifying.

    Args:
        lookup: the prompt-lookup drafter.
        fallback: the draft model.
    """

    kinds = ("onehot",)
    cheap = True  # the lookup is; the engine hands its controller over through `gate`

    def __init__(self, lookup: NGramDrafter, fallback: ModelDrafter):
        if not isinstance(lookup, NGramDrafter) or not isinstance(fallback, ModelDrafter):
            raise ValueError("LookupThenModel needs an NGramDrafter and a ModelDrafter")
        self.lookup, self.fallback = lookup, fallback
        self.match_length = 0  # the lookup's match for its drafts, 0 for the model's (the controller's bucket)
        self._used: Drafter | None = None

    def check_compatible(self, target) -> None:
        self.fallback.check_compatible(target)

    def reset(self) -> None:
        self.lookup.reset()
        self.fallback.reset()
        self.match_length, self._used = 0, None

    def prepare(self, tokens: list[int]) -> None:
        """Nothing: the model prefills when it first drafts (lookup alone may carry a long-prompt request,
        and a Q4_0 prefill of a 1000-token rag prompt costs ~10% of a 128-token answer's time)."""

    def propose(self, req: DraftRequest, budget: int) -> DraftTree | None:
        self.check_request(req, budget)
        self.catchup_s, self._used = 0.0, None
        self.lookup.gate = self.gate
        tree = self.lookup.propose(req, budget)
        if tree is not None:
            self.match_length, self._used = self.lookup.match_length, self.lookup
            return tree
        self.match_length = 0
        gamma = self.gate(0, budget) if self.gate is not None else min(budget, 4)
        if gamma <= 0:
            return None
        tree = self.fallback.propose(req, gamma)
        self.catchup_s = self.fallback.catchup_s  # it catches up on the tokens the lookup drafted
        self._used = self.fallback if tree is not None else None
        return tree

    def observe(self, req: DraftRequest, tree: DraftTree, result: VerifyResult) -> None:
        if self._used is self.fallback:  # else the model syncs when it next drafts
            self.fallback.observe(req, tree, result)
