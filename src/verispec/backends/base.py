"""The target-model backend contract.

A backend holds ONE sequence (batch size 1) with a KV cache.  The committed
tokens are all in the KV cache except the last one, called *pending*: its
logits have not been computed yet.  One speculative step is

    logits = backend.score(tokens, parent)   # pending + a draft tree, one forward pass
    ... a verifier picks an accepted root-to-node path and one extra token ...
    backend.commit(path, next_token)         # keep the accepted nodes, drop the rest

``score`` never changes the committed state; ``commit`` reuses the KV entries
computed by the last ``score`` for the accepted nodes (nothing is recomputed)
and rolls the rest back.

Tree layout (``N`` draft nodes, topologically ordered):
    tokens: LongTensor[N]   token id of node i
    parent: LongTensor[N]   parent node index, -1 for a child of pending, parent[i] < i
Row 0 of the result holds the logits after pending, row i + 1 the logits after
node i.  Node i attends to the committed cache, pending and its ancestors; its
position is ``n_past - 1 + depth(i)`` (children of pending have depth 1).

Subclasses implement the three hooks ``_reset``, ``_score`` and ``_commit``
(and ``_truncate`` for ``truncate``, the rollback drafters use); all argument
checking lives here, once.
"""
from __future__ import annotations

import hashlib
import os
import platform
from abc import ABC, abstractmethod
from typing import Sequence

import torch

from .tree import TreeLayout, check_path, make_layout

__all__ = ["Backend", "Tokenizer", "ScoreOutput", "cpu_key", "cpu_name", "usable_cpus"]


def usable_cpus() -> int:
    """Cores this process may run on: the default thread count of both backends."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what `platform` says: what a measurement ran on."""
    fallback = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), fallback)
    except OSError:
        return fallback


def cpu_key() -> str:
    """What names this CPU in the caches of timings (cost curves, the attention path): its model name, family,
    model and stepping, and a digest of its feature flags. A VM's model name can be as vague as "Intel(R) Xeon(R)
    Processor" and ``platform.processor()`` is "x86_64" on Linux, so neither alone tells two CPU types apart (a
    cache folder shared between them would price drafts with the other CPU's timings)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if not ln.strip():
                    break  # the first processor's block describes them all
                k, _, v = ln.partition(":")
                fields[k.strip()] = v.strip()
    except OSError:
        pass
    flags = hashlib.sha1(" ".join(sorted(fields.get("flags", "").split())).encode()).hexdigest()[:12]
    ident = "-".join(fields.get(k, "?") for k in ("cpu family", "model", "stepping"))
    return f"{cpu_name()}|{ident}|{flags}|{platform.machine()}"

# (logits [N + 1, V] float32, hidden [N + 1, H] float32)
ScoreOutput = tuple[torch.Tensor, torch.Tensor]


class Tokenizer(ABC):
    """Text <-> token ids for one model, plus its chat template."""

    @abstractmethod
    def encode(self, text: str, add_special: bool = False) -> list[int]:
        """Token ids of ``text``; ``add_special`` adds the model's BOS (if it has one).

        Special-token text (e.g. ``<|im_start|>``) is parsed as the special token.
        """

    @abstractmethod
    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        """Text of ``ids``; special tokens are rendered unless ``skip_special``."""

    @abstractmethod
    def apply_chat_template(self, messages: list[dict]) -> list[int]:
        """Prompt token ids for a chat, ending with the assistant generation prompt."""

    @property
    @abstractmethod
    def eos_token_ids(self) -> set[int]:
        """Token ids that end a generation (EOS, EOT, ...)."""


class Backend(ABC):
    """One sequence of a target model behind a KV cache with rollback."""

    def __init__(self) -> None:
        self._n_past = 0                      # committed tokens incl. pending
        self._pending: int | None = None      # token id of pending
        self._tree: TreeLayout | None = None  # last scored tree, until commit/reset

    # ------------------------------------------------------------------ properties
    @property
    @abstractmethod
    def name(self) -> str:
        """Short human-readable model/backend name."""

    @property
    def cost_key(self) -> str:
        """What, beyond name, model file and threads, changes this backend's cost curve T(k)."""
        return ""

    @property
    def vocab_size(self) -> int:
        """Number of logit columns V (subclasses set ``_n_vocab`` when they load)."""
        return self._n_vocab

    @property
    def n_ctx(self) -> int:
        """Maximum number of tokens (committed + tree nodes) the cache can hold (``_n_ctx``)."""
        return self._n_ctx

    @property
    @abstractmethod
    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer."""

    @property
    def n_past(self) -> int:
        """Committed length, pending included (0 before the first reset)."""
        return self._n_past

    @property
    def pending(self) -> int | None:
        """The pending token id (None before the first reset)."""
        return self._pending

    @property
    def pending_scored(self) -> bool:
        """Whether the next plain step's logits are already computed (llama.cpp: by the prompt's prefill, as
        llama-cpp-python computes a request's first token), so that `score_next` / `score_argmax` of no tree run
        no pass: that step's time says nothing of a pass's cost."""
        return False

    # ------------------------------------------------------------------ contract
    def reset(self, tokens: Sequence[int], shared: int = 0) -> None:
        """Clear the cache, prefill ``tokens[:-1]``, make ``tokens[-1]`` pending.

        ``shared``: the length of a leading part that recurs between requests (a chat template's system turn).
        A backend may prefill it as a batch of its own and keep that batch's result for the next request that
        starts alike (llama.cpp: its cache state, restored instead of computed; torch's lean path: its cache rows,
        kept); the result depends on the tokens and ``shared`` alone, never on earlier requests. 0: no such part."""
        tokens = [int(t) for t in tokens]
        if not tokens:
            raise ValueError("reset() needs at least one token")
        if len(tokens) > self.n_ctx:
            raise ValueError(f"{len(tokens)} tokens do not fit in n_ctx={self.n_ctx}")
        if not (isinstance(shared, int) and 0 <= shared < len(tokens)):
            raise ValueError(f"shared must be an int in [0, {len(tokens)}), got {shared!r}")
        self._check_ids(tokens)
        self._tree = None
        self._n_past = 0
        self._pending = tokens[-1]  # known to `_reset_shared`, which may score it along (`pending_scored`)
        self._reset_shared(tokens[:-1], shared)
        self._n_past = len(tokens)

    def score(self, tokens=(), parent=(), return_hidden: bool = False):
        """Logits after pending and after each node of a draft tree, in one pass.

        tokens: LongTensor[N], parent: LongTensor[N] (-1 = child of pending).
        Returns float32 CPU logits [N + 1, V], or ``(logits, hidden [N + 1, H])``
        when ``return_hidden``.  The committed state is left unchanged.
        """
        layout = self._new_tree(tokens, parent)
        out = self._score(layout, return_hidden)
        self._tree = layout
        return out

    def score_argmax(self, tokens=(), parent=()) -> torch.Tensor:
        """The index of each row's largest logit (the first among ties) that `score` would return:
        LongTensor [N + 1]. Greedy decoding needs nothing else, and a backend may find it where the logits lie
        instead of copying them out first (llama.cpp: 0.08 against 0.27 ms a row on 2 cores, SmolLM2's 49,152
        logits). Same state change as `score`."""
        layout = self._new_tree(tokens, parent)
        out = self._score_argmax(layout)
        self._tree = layout
        return out

    def score_next(self) -> torch.Tensor:
        """The pending token's logits [V] (a plain step: `score()` of no tree, its one row). A backend may return
        a view of its own buffer (llama.cpp: no copy of the 49,152 floats), valid until its next pass: read it,
        do not keep or write it. Same state change as `score`."""
        layout = self._new_tree((), ())
        out = self._score_next(layout)
        self._tree = layout
        return out

    def _new_tree(self, tokens, parent) -> TreeLayout:
        """The layout of a tree to score next, checked against the vocabulary and the context's room."""
        self._require_reset()
        tok = _as_int_list(tokens)
        par = _as_int_list(parent)
        layout = make_layout(tok, par)
        self._check_ids(tok)
        if self._n_past + layout.n > self.n_ctx:
            raise ValueError(
                f"n_past={self._n_past} + {layout.n} tree nodes exceed n_ctx={self.n_ctx}")
        self._tree = None  # a failed pass must not leave a stale tree behind
        return layout

    def commit(self, path: Sequence[int], next_token: int) -> None:
        """Accept the nodes ``path`` (a root-to-node chain of the last scored tree).

        Afterwards the cache holds the committed context, the old pending and the
        accepted nodes, and ``next_token`` is the new pending token.  Without a
        preceding ``score`` only an empty path is allowed (pending is evaluated).
        """
        self._require_reset()
        path = [int(p) for p in path]
        next_token = int(next_token)
        self._check_ids([next_token])
        if self._tree is None:
            if path:
                raise ValueError("commit() with a non-empty path needs a preceding score()")
            if self._n_past + 1 > self.n_ctx:
                raise ValueError(f"context full (n_ctx={self.n_ctx})")
            self._score(make_layout([], []), False)
            self._tree = make_layout([], [])
        check_path(self._tree, path)
        if self._n_past + len(path) + 1 > self.n_ctx:
            raise ValueError(f"committing {len(path) + 1} tokens overflows n_ctx={self.n_ctx}")
        self._commit(self._tree, path)
        self._tree = None
        self._n_past += len(path) + 1
        self._pending = next_token

    def truncate(self, n_keep: int, pending: int) -> None:
        """Roll the committed state back: keep the first ``n_keep`` committed tokens, drop the rest.

        ``0 <= n_keep <= n_past - 1`` (the first ``n_past - 1`` committed tokens are the ones
        in the cache; the old pending is not).  Afterwards the cache holds exactly those
        ``n_keep`` tokens, ``pending`` is the pending token and ``n_past == n_keep + 1``: the
        same state as ``reset(committed[:n_keep] + [pending])``, without recomputing anything.
        Any uncommitted tree from the last ``score`` is discarded.  Used by drafters that
        keep their own drafted tokens committed and roll back to the accepted prefix.
        """
        self._require_reset()
        if isinstance(n_keep, bool) or isinstance(pending, bool):
            raise ValueError("truncate() takes ints, not bools")
        n_keep, pending = int(n_keep), int(pending)
        if not 0 <= n_keep <= self._n_past - 1:
            raise ValueError(f"truncate(n_keep={n_keep}): must be in [0, n_past - 1 = {self._n_past - 1}]")
        self._check_ids([pending])
        self._tree = None
        self._truncate(n_keep)
        self._n_past = n_keep + 1
        self._pending = pending

    # ------------------------------------------------------------------ hooks
    @abstractmethod
    def _reset(self, prefix: list[int]) -> None:
        """Clear the cache and evaluate ``prefix`` (may be empty) into it."""

    @abstractmethod
    def _score(self, layout: TreeLayout, return_hidden: bool):
        """Evaluate pending (``self._pending`` at position ``n_past - 1``) + the tree.

        Must first drop whatever a previous uncommitted ``_score`` left in the cache.
        """

    def _score_argmax(self, layout: TreeLayout) -> torch.Tensor:
        """`_score`'s rows reduced to their argmax [N + 1]; override where that is cheaper than copying them."""
        return self._score(layout, False).argmax(-1)

    def _reset_shared(self, prefix: list[int], shared: int) -> None:
        """`_reset` with the first ``shared`` tokens of ``prefix`` a recurring part (`reset`; 0: none); by default
        a plain `_reset`."""
        self._reset(prefix)

    def _score_next(self, layout: TreeLayout) -> torch.Tensor:
        """`_score`'s one row of a plain step; override where it can be read without a copy."""
        return self._score(layout, False)[0]

    @abstractmethod
    def _commit(self, layout: TreeLayout, path: list[int]) -> None:
        """Keep pending + the nodes ``path`` of ``layout`` in the cache, drop the rest."""

    def _truncate(self, n_keep: int) -> None:
        """Keep the cache entries of positions ``< n_keep``, drop all others (scored trees too).

        Not abstract, so that backends written before ``truncate`` joined the contract still load.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement truncate()")

    # ------------------------------------------------------------------ helpers
    def _require_reset(self) -> None:
        if self._pending is None:
            raise RuntimeError("call reset(tokens) first")

    def _check_ids(self, ids: list[int]) -> None:
        v = self.vocab_size
        bad = [t for t in ids if not 0 <= t < v]
        if bad:
            raise ValueError(f"token ids out of range [0, {v}): {bad[:5]}")


def _as_int_list(x) -> list[int]:
    """A 1-D tensor / sequence of ints as a Python list."""
    if isinstance(x, torch.Tensor):
        if x.dim() != 1:
            raise ValueError(f"expected a 1-D tensor, got shape {tuple(x.shape)}")
        return x.tolist()
    return [int(v) for v in x]
