"""Prompt lookup decoding: draft the tokens that followed the last occurrence of the context's suffix.

Saxena 2023, "Prompt Lookup Decoding" (github.com/apoorvumang/prompt-lookup-decoding), as in
transformers' `PromptLookupCandidateGenerator` (`prompt_lookup_num_tokens`): take the last n
tokens of the context (n from `max_ngram` down to `min_ngram`), find an earlier occurrence, and
propose the tokens that followed it. Here the *most recent* occurrence of the *longest* n-gram
wins (transformers takes the first), and k > 1 drafts are the k most recent distinct
continuations (longest n first), merged into a tree. No model is run: the drafts are point
masses, kind 'onehot', q None.

Speed: the context is mirrored incrementally into a numpy buffer (only new tokens are copied)
and each n-gram is searched by narrowing the positions that match its first token, so a
proposal over a few thousand tokens costs well under a millisecond.

`match_length` reports, for the last proposal, how many tokens before the continuation agree
with the end of the context (the n-gram match extended backwards, capped at `max_match`);
0 when there was no proposal. The engine's controller uses it as the draft's confidence.
"""
from __future__ import annotations

import numpy as np
import torch

from ..tree import DraftTree
from .base import DraftRequest, Drafter

_MAX_CANDIDATES = 256  # occurrences examined per n-gram size, most recent first


class NGramDrafter(Drafter):
    """Prompt lookup over the committed context (prompt + generated).

    Args:
        max_ngram: longest suffix n-gram searched.
        min_ngram: shortest; no occurrence of length >= min_ngram -> propose returns None.
        min_match: an occurrence counts only if its backward-extended match is at least this
            long (default min_ngram: any n-gram hit counts).
        max_match: cap on the backward extension reported in `match_length`.
    """

    kinds = ("onehot",)
    cheap = True

    def __init__(self, max_ngram: int = 4, min_ngram: int = 2, min_match: int | None = None,
                 max_match: int = 64):
        if not (isinstance(min_ngram, int) and isinstance(max_ngram, int) and 1 <= min_ngram <= max_ngram):
            raise ValueError(f"need 1 <= min_ngram <= max_ngram, got min_ngram={min_ngram!r}, max_ngram={max_ngram!r}")
        min_match = min_ngram if min_match is None else min_match
        if not (isinstance(min_match, int) and isinstance(max_match, int) and 1 <= min_match <= max_match
                and max_match >= max_ngram):
            raise ValueError(f"need 1 <= min_match <= max_match and max_match >= max_ngram, got "
                             f"min_match={min_match!r}, max_match={max_match!r}")
        self.max_ngram, self.min_ngram = max_ngram, min_ngram
        self.min_match, self.max_match = min_match, max_match
        self.match_length = 0
        self.reset()

    def reset(self) -> None:
        self._list: list[int] = []  # the context mirrored so far
        self._buf = np.empty(1024, dtype=np.int64)  # [capacity], first len(_list) entries valid
        self.match_length = 0

    # ------------------------------------------------------------------ contract
    def propose(self, req: DraftRequest, budget: int) -> DraftTree | None:
        self.check_request(req, budget)
        arr = self._sync(req.tokens)  # [L]
        conts, match = self._continuations(arr, budget, req.k)
        self.match_length = match
        if not conts:
            return None
        gamma = max(len(c) for c in conts)
        if self.gate is not None:  # let the engine's controller decide before any tree is built
            gamma = min(gamma, self.gate(match, gamma))
            if gamma <= 0:
                return None
            conts = [c[:gamma] for c in conts]
        drafts = torch.full((1, len(conts), gamma), -1, dtype=torch.int64)  # [1, k', gamma]
        for j, c in enumerate(conts):
            drafts[0, j, : len(c)] = torch.tensor(c)
        return DraftTree.from_drafts(drafts, None, "onehot")

    def continuation(self, tokens: list[int], budget: int) -> list[int]:
        """The tokens (at most `budget`) that followed the best earlier occurrence of the context's suffix,
        as `propose` ranks them, without the controller's gate; [] when there is none."""
        conts, self.match_length = self._continuations(self._sync(tokens), budget, 1)
        return list(conts[0]) if conts else []

    # ------------------------------------------------------------------ helpers
    def _sync(self, tokens: list[int]) -> np.ndarray:
        """Mirror `tokens` into the numpy buffer, copying only what is new; returns the [L] view."""
        n = len(self._list)
        if len(tokens) < n or tokens[:n] != self._list:
            self.reset()
            n = 0
        new = tokens[n:]
        if new:
            if len(tokens) > self._buf.shape[0]:
                grown = np.empty(max(2 * self._buf.shape[0], len(tokens)), dtype=np.int64)
                grown[:n] = self._buf[:n]
                self._buf = grown
            self._buf[n: len(tokens)] = new
            self._list.extend(new)
        return self._buf[: len(tokens)]

    def _continuations(self, arr: np.ndarray, budget: int, k: int) -> tuple[list[tuple[int, ...]], int]:
        """Up to k distinct continuations (longest n-gram first, then most recent) and the first's match length."""
        L = arr.shape[0]
        conts: list[tuple[int, ...]] = []
        matches: list[int] = []  # match length of each continuation
        for n in range(self.max_ngram, self.min_ngram - 1, -1):
            if L <= n:  # an earlier occurrence must start at i <= L - n - 1
                continue
            for i in self._occurrences(arr, n)[::-1][:_MAX_CANDIDATES]:
                m = self._match_length(arr, int(i), n)
                if m < self.min_match:
                    continue
                idx = _add_distinct(conts, tuple(arr[i + n: i + n + budget].tolist()))
                if idx == len(matches):
                    matches.append(m)
                elif idx >= 0:
                    matches[idx] = m
                if len(conts) == k:
                    return conts, matches[0]
        return conts, matches[0] if matches else 0

    @staticmethod
    def _occurrences(arr: np.ndarray, n: int) -> np.ndarray:
        """Starts i < L - n (ascending) with arr[i:i+n] == arr[L-n:], the suffix itself excluded."""
        L = arr.shape[0]
        suffix = arr[L - n:]
        cand = np.flatnonzero(arr[: L - n] == suffix[0])
        for o in range(1, n):
            if cand.size == 0:
                break
            cand = cand[arr[cand + o] == suffix[o]]
        return cand

    def _match_length(self, arr: np.ndarray, i: int, n: int) -> int:
        """Length m >= n of the match arr[i+n-m : i+n] == arr[L-m : L], capped at max_match."""
        L, m = arr.shape[0], n
        while m < self.max_match and i + n - m - 1 >= 0 and arr[i + n - m - 1] == arr[L - m - 1]:
            m += 1
        return m


def _add_distinct(conts: list[tuple[int, ...]], cont: tuple[int, ...]) -> int:
    """Add `cont` unless it is a prefix of a chosen continuation; one it extends is replaced.

    Returns the index written (len(conts) - 1 after an append), or -1 when nothing changed.
    """
    for idx, old in enumerate(conts):
        if old[: len(cont)] == cont:
            return -1
        if cont[: len(old)] == old:  # `old` was cut short by the end of the context
            conts[idx] = cont
            return idx
    conts.append(cont)
    return len(conts) - 1
