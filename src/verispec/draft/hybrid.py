"""Prompt lookup where the text repeats itself, a draft model (or a draft head) everywhere else.

Neither drafter wins on every kind of prompt. On Spec-Bench with SmolLM2-135M as a BF16 torch
target (2 CPU cores, greedy), prompt lookup is ~3x faster than plain decoding on rag and ~2.2x
on translation but ~1.1x on coding and reasoning, where the answer does not copy the prompt; a
Q4_0 copy of the target run by llama.cpp accepts ~0.8 per token on every category but costs a
fifth of a target step per drafted token. Lookup costs ~0.1 ms, so it is tried first, gated by
the engine's controller on its match length exactly as `NGramDrafter` is; when it has nothing
worth drafting, the model drafts as far as the controller allows for the draft-model bucket
(match length 0), whose acceptance and overhead it learns apart from the lookup's.

At temperature 0 every draft is a point mass (kind 'onehot'): the model's argmax, or the tokens
that followed the match. A sampled target asks for kind 'iid': the model samples its k
drafts from its q as `ModelDrafter` does, and the lookup gives one chain, reported as drawn from
the point masses q_t = onehot(x_t), which it is; a point mass accepted with probability p(x) is
what 'onehot' verification does too, so either way the output law is the target's.

A copy branch (`copy`): where the model drafts a greedy target's tree, the tokens that followed the
last token's most recent earlier occurrence join it as one more branch. The head cannot copy
(docs/speed.md §8), and a lookup needs two tokens of match: names and terms that the answer takes
from the prompt after one shared token are the head's commonest misses, and on the torch backend a
tree node costs ~3% of a step. Any tree is verified exactly, so the branch changes speed only.
"""
from __future__ import annotations

import torch

from ..checks import int_at_least
from ..tree import DraftTree, VerifyResult
from .base import Drafter, DraftRequest
from .ngram import NGramDrafter
from .value_tree import as_drafts


class LookupThenModel(Drafter):
    """`NGramDrafter` first, a model drafter when the lookup has no draft worth verifying.

    Args:
        lookup: the prompt-lookup drafter.
        fallback: `ModelDrafter` (or early exit) or `HeadDrafter`: kinds 'onehot' and 'iid', a `vocab_size`.
        copy: a lookup (e.g. `NGramDrafter(max_ngram=1, min_ngram=1)`) whose continuation, up to `copy_len`
            tokens, joins the fallback's draft as one more branch where the verifier takes any tree
            (`DraftRequest.any_tree`); None: no branch.
    """

    kinds = ("onehot", "iid")
    cheap = True  # the lookup is; the engine hands its controller over through `gate`
    model_fallback = True  # the controller also weighs the model's bucket before skipping the search

    def __init__(self, lookup: NGramDrafter, fallback: Drafter, copy: NGramDrafter | None = None, copy_len: int = 4):
        if not isinstance(lookup, NGramDrafter) or not isinstance(fallback, Drafter) or \
                not {"onehot", "iid"} <= set(fallback.kinds) or not hasattr(fallback, "vocab_size"):
            raise ValueError("LookupThenModel needs an NGramDrafter and a model drafter (ModelDrafter, HeadDrafter)")
        if copy is not None and (not isinstance(copy, NGramDrafter) or copy is lookup):
            raise ValueError("copy must be an NGramDrafter of its own, or None")
        if copy is not None and not int_at_least(copy_len, 1):
            raise ValueError(f"copy_len must be an int >= 1, got {copy_len!r}")
        self.lookup, self.fallback = lookup, fallback
        self.copy, self.copy_len = copy, copy_len
        self.match_length = 0  # the lookup's match for its drafts, 0 for the model's (the controller's bucket)
        self._used: Drafter | None = None

    def check_compatible(self, target) -> None:
        check = getattr(self.fallback, "check_compatible", None)
        if check is not None:
            check(target)

    def reset(self) -> None:
        self.lookup.reset()
        self.fallback.reset()
        if self.copy is not None:
            self.copy.reset()
        self.match_length, self._used = 0, None

    def prepare(self, tokens: list[int]) -> None:
        """Nothing: the model prefills when it first drafts (lookup alone may carry a long-prompt request,
        and a Q4_0 prefill of a 1000-token rag prompt costs ~10% of a 128-token answer's time)."""

    def propose(self, req: DraftRequest, budget: int) -> DraftTree | None:
        self.check_request(req, budget)
        self.catchup_s, self._used = 0.0, None
        self.lookup.gate, self.fallback.price = self.gate, self.price
        # iid: one lookup chain (k' = 1 <= k i.i.d. drafts is a valid sample); the model draws k
        onehot = DraftRequest(req.tokens, req.noise, req.params, req.k if req.kind == "onehot" else 1, "onehot")
        tree = self.lookup.propose(onehot, budget)
        if tree is not None:
            self.match_length, self._used = self.lookup.match_length, self.lookup
            return tree if req.kind == "onehot" else _as_point_masses(tree, self.fallback.vocab_size)
        self.match_length = 0
        gamma = self.gate(0, budget) if self.gate is not None else min(budget, 4)
        if gamma <= 0:
            return None
        tree = self.fallback.propose(req, gamma)
        if tree is not None and self.copy is not None and req.any_tree:
            tree = priced_branch(tree, self.copy.continuation(req.tokens, min(budget, self.copy_len)), self.price)
        self.catchup_s = self.fallback.catchup_s  # it catches up on the tokens the lookup drafted
        self._used = self.fallback if tree is not None else None
        return tree

    def observe(self, req: DraftRequest, tree: DraftTree, result: VerifyResult) -> None:
        if self._used is self.fallback:  # else the model syncs when it next drafts
            self.fallback.observe(req, tree, result)


COPY_NODE_PRICE = 0.1  # the most a copy branch's node may add to an iteration's price, in plain steps


def priced_branch(tree: DraftTree, branch: list[int], price=None) -> DraftTree:
    """`with_branch` with the longest prefix of `branch` whose new nodes each add at most `COPY_NODE_PRICE` to
    `price(n)` on average (the engine's price of an iteration with n nodes; None: the whole branch). Where a
    row costs a few hundredths of a step (torch on a CPU with native bfloat16) the whole branch joins; on an
    AVX2 CPU, where a pass of 4 rows costs 1.04 steps and one of 5 rows 1.6, it fills the tree up to 4 rows at
    most. There, at temperature 0 on 26 prompts, `ngram+head` without the branch was 1.13x (1.07-1.18) as fast
    as with the whole branch joined unpriced (docs/speed.md §24)."""
    n = tree.num_nodes
    for m in range(len(branch), 0, -1):
        grown = with_branch(tree, branch[:m])
        added = grown.num_nodes - n
        if added == 0:  # the tree holds this much of the branch already
            return tree
        if price is None or price(n + added) - price(n) <= COPY_NODE_PRICE * added:
            return grown
    return tree


def with_branch(tree: DraftTree, branch: list[int]) -> DraftTree:
    """A 'onehot' tree (B = 1) with one more draft, `branch` (token ids), merged where it shares a prefix;
    [] leaves the tree as it is."""
    if not branch:
        return tree
    paths = [[t for t in d if t >= 0] for d in tree.drafts()[0].tolist()]
    return DraftTree.from_drafts(as_drafts(paths + [branch]), None, "onehot")


def _as_point_masses(tree: DraftTree, vocab: int) -> DraftTree:
    """A lookup chain as kind 'iid': each token drawn from q = onehot(token). Rows [1, N + 1, V]."""
    tokens = tree.tokens[0]  # [N] a chain: node i is the child of row i
    q = torch.zeros(1, tokens.numel(), vocab, dtype=torch.float64)
    q[0, torch.arange(tokens.numel()), tokens] = 1.0
    return DraftTree.from_drafts(tokens[None, None], q[:, None], "iid")
