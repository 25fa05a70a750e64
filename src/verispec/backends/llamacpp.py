"""llama.cpp target backend (GGUF models, fast on CPU) via llama-cpp-python's low-level API.

How a draft tree is stored in llama.cpp's KV cache
---------------------------------------------------
The context uses a *unified* KV cache, in which one cell can belong to several
sequence ids and attention is masked per query token by the first sequence id
of that token plus causality on positions.  For a tree whose leaves, in
depth-first order, are ``l_0 .. l_{L-1}``:

* sequence ``k`` is the root-to-leaf path of ``l_k``; sequence 0 also holds
  the committed context;
* before the pass the committed cells are added to sequences ``1 .. L-1``
  (``seq_cp`` on a unified cache only sets bits, no data is copied);
* pending belongs to all ``L`` sequences, node ``i`` to every sequence whose
  path passes through it, at position ``n_past - 1 + depth(i)``.  A node's
  first sequence is a leaf below it, so it sees the committed context,
  pending and exactly its ancestors (deeper nodes of that path have larger
  positions and are masked by causality).
* the nodes go into the batch in depth-first preorder, so the first-child
  chain (leaf 0's path) lands in the cells right after pending.

``commit`` moves the accepted path into sequence 0 (``seq_rm`` + ``seq_cp`` of
that leaf's sequence), cuts sequence 0 after it and ``seq_keep(0)`` frees every
other cell: the accepted nodes' KV entries are reused, nothing is recomputed.
A chain is the one-leaf case and needs no copies at all.

Cell order and bitwise reproducibility
--------------------------------------
llama.cpp's logits do not depend on the batch size (chain, tree, prefill and single steps give identical bits
on the CPU build tested), but attention sums the visible cells in *cell* order (flash attention keeps fp16
accumulators). While the live cells stay in position order every result equals plain decoding bit for bit. An
accepted path that skips a rejected node leaves a freed cell before its last node; later tokens fill that hole
out of position order and all later logits differ from plain decoding at the rounding level (up to ~1 logit on
SmolLM2-135M Q4_1, as flash attention on vs off). ``exact_layout=True`` prevents this: such a commit keeps the
in-order part of the path and re-evaluates the rest in place (one small decode, no logits): bitwise equality.
"""
from __future__ import annotations

import os

import llama_cpp as L
import torch

from .base import Backend, usable_cpus
from .gguf_file import require_gguf
from .llamacpp_api import (KVMemory, ModelHandle, TokenBatch, argmax_rows, decode, logits_view, new_context,
                           quiet_logs, read_rows, seq_state_get, seq_state_set)
from .llamacpp_attn import flash_attn_choice
from .llamacpp_tokenizer import LlamaCppTokenizer
from .tree import TreeLayout

__all__ = ["AUTO_TORCH_PREFILL", "AUTO_TORCH_PREFILL_F32", "LlamaCppBackend"]

# Prompts from this many tokens are prefilled by torch where it applies: with native bfloat16 on 2 cores 1.05x
# llama.cpp at 128 tokens, 1.22-1.30x at 900-1500 (§15); in float32 (an AVX2 CPU) 1.12x at 200, 1.4-1.5x at 900+
# (§26)
AUTO_TORCH_PREFILL, AUTO_TORCH_PREFILL_F32 = 128, 192
AUTO_TORCH_PREFILL_MAX_BYTES = 2 << 30  # ... for a file of at most this size: torch keeps its own copy of the weights
_SHARED_KEPT = 4  # recurring prompt parts (`reset(shared=...)`) whose cache state a backend keeps


class LlamaCppBackend(Backend):
    """One sequence of a GGUF model in llama.cpp, with tree scoring and KV rollback.

    Args:
        model_path: path to a ``.gguf`` file.
        n_ctx: KV cache size in tokens (committed context + tree nodes).
        n_threads: CPU threads (default: all cores available to the process).
        n_batch: prefill chunk size and largest tree (nodes + 1) one ``score`` accepts.
        max_tree_leaves: most leaves a scored tree may have (llama.cpp sequence ids).
        exact_layout: re-evaluate the out-of-order tail of an accepted tree path
            so that later logits stay bitwise equal to plain decoding (see module doc).
        flash_attn: None = on a CPU, whichever of llama.cpp's attention paths is cheaper for short passes, measured
            once per model, thread count and CPU (`llamacpp_attn`; on a GPU, llama.cpp's choice); where that is on
            and torch prefills, its prompts decode in a second context without it (at 1,000 tokens of context its
            CPU kernel makes a step 9-50% dearer, docs/speed.md §26, §31). True / False: one context, that setting.
        torch_prefill: prompts of at least this many tokens are prefilled by torch (`llamacpp_prefill`: 1.3-1.8x
            llama.cpp's prefill on 2 cores, a BF16 Llama GGUF); 0 = never; None = from `AUTO_TORCH_PREFILL`
            tokens (`AUTO_TORCH_PREFILL_F32` for float32 products) for a file of at most
            `AUTO_TORCH_PREFILL_MAX_BYTES` where it applies, else never.
        verbose: let llama.cpp log to stderr.
    """

    def __init__(self, model_path: str, *, n_ctx: int = 2048, n_threads: int | None = None,
                 n_batch: int = 512, max_tree_leaves: int = 64, exact_layout: bool = False,
                 flash_attn: bool | None = None, torch_prefill: int | None = None, n_gpu_layers: int = 0,
                 verbose: bool = False) -> None:
        super().__init__()
        path = require_gguf(model_path)
        if not 1 <= max_tree_leaves <= 256:
            raise ValueError("max_tree_leaves must be in [1, 256] (llama.cpp's LLAMA_MAX_SEQ)")
        quiet_logs(verbose)
        self._path = path
        self.exact_layout = exact_layout
        self._model = ModelHandle(path, n_gpu_layers)
        self._ctx = self._main = self._long = None  # the context in use; llama.cpp's choice; no flash attention
        self._batch = None
        try:
            self._n_threads = n_threads or usable_cpus()
            if torch_prefill is not None and torch_prefill < 0:
                raise ValueError(f"torch_prefill must be >= 0 tokens, got {torch_prefill}")
            strict = torch_prefill is not None  # asked for: an error if it cannot apply
            prefill = self._open_prefill(strict) if torch_prefill or (not strict and n_gpu_layers == 0) else None
            if flash_attn is None and n_gpu_layers == 0:
                flash_attn = flash_attn_choice(self._model.ptr, path, self._n_threads)
                split = flash_attn  # see flash_attn above
            else:
                split = False
            self._flash_attn = flash_attn
            kw = dict(n_ctx=n_ctx, n_batch=n_batch, n_seq_max=max_tree_leaves, n_threads=self._n_threads)
            self._main = self._use(_Context(self._model.ptr, flash_attn=flash_attn, **kw))
            if split and prefill is not None:
                self._long = _Context(self._model.ptr, flash_attn=False, **kw)
            self._n_ctx = int(L.llama_n_ctx(self._ctx))
            # llama.cpp caps a decode at min(n_batch, n_ctx) tokens and aborts the process past it
            self._n_batch = min(n_batch, int(L.llama_n_batch(self._ctx)), self._n_ctx)
            self._max_leaves = max_tree_leaves
            self._batch = TokenBatch(n_batch, max_tree_leaves)
            self._tok = LlamaCppTokenizer(self._model)
            self._n_vocab = self._tok.n_vocab
            self._n_embd = int(L.llama_model_n_embd(self._model.ptr))
            self._prefill, self.torch_prefill = None, 0
            if prefill is not None:
                self._use(self._long or self._main)
                self._check_prefill(prefill, torch_prefill, strict)  # against the context torch fills
                self._use(self._main)
            if self._prefill is None and self._long is not None:
                self._long = self._long.free()
        except BaseException:
            self.close()
            raise
        self._dirty = False          # cells past the committed prefix exist (last score)
        self._scored_leaves = 0      # sequences used by the last score
        self._prescored = None       # batch index of pending's logits in the prefill's last batch (`_pass`)
        self.recomputed_tokens = 0   # tokens re-evaluated by exact_layout commits

    # ------------------------------------------------------------------ properties
    @property
    def name(self) -> str:
        return f"llamacpp:{os.path.basename(self._path)}"

    @property
    def cost_key(self) -> str:
        """Flash attention on or off changes how a k-token pass scales with the context."""
        split = f"|split{self.torch_prefill}" if self._long is not None else ""  # prompts from there: flash off
        return {None: "", True: "fa", False: "no-fa"}[self._flash_attn] + split

    @property
    def tokenizer(self) -> LlamaCppTokenizer:
        return self._tok

    @property
    def n_threads(self) -> int:
        """CPU threads used by llama.cpp."""
        return self._n_threads

    # ------------------------------------------------------------------ hooks
    def _reset(self, prefix: list[int]) -> None:
        self._reset_shared(prefix, 0)

    def _reset_shared(self, prefix: list[int], shared: int) -> None:
        """Clear the cache and prefill ``prefix``: by torch from `torch_prefill` tokens, else by llama.cpp, the
        recurring part (``shared`` tokens, a chat template's system turn, ~24) as a batch of its own whose cache
        state is kept and restored by the next request that starts alike (`_restore_shared`)."""
        self._check_open()
        by_torch = self._prefill is not None and len(prefix) >= self.torch_prefill
        self._use(self._long if by_torch and self._long is not None else self._main)
        self._mem.clear()
        self._dirty = False
        self._scored_leaves = 0
        self._prescored = None
        if by_torch:
            return self._prefill.fill(self._ctx, prefix, *self._state_format)  # whole, as without ``shared``
        start = shared if 0 < shared < len(prefix) else 0
        if start:
            self._restore_shared(prefix[:start])
        # pending rides along in the prefill's last batch, its logits out (one batched token, ~1-2 ms, instead of
        # the first plain step's pass, ~12-15 ms on 2 cores); its cell is then what a pass of no tree leaves
        self._prescored = self._decode_seq0(prefix[start:] + [self._pending], start, last_out=True)
        self._dirty = True

    def _use(self, c: "_Context") -> "_Context":
        """Make `c` the context that passes, commits and prefills go to."""
        self._ctx, self._mem, self._shared = c.ptr, c.mem, c.shared
        return c

    def _restore_shared(self, part: list[int]) -> None:
        """Put ``part`` at positions 0.. of the cleared cache from its kept sequence state (~0.1 ms instead of ~25
        ms of llama.cpp's prefill on 2 cores, the same bytes either way), computing and keeping it the first time;
        `_SHARED_KEPT` states at most, the least recently used dropped."""
        key = tuple(part)
        state = self._shared.pop(key, None)
        if state is None or not seq_state_set(self._ctx, state):
            self._mem.clear()
            self._decode_seq0(part, 0)
            state = seq_state_get(self._ctx)
        self._shared[key] = state  # most recent last
        while len(self._shared) > _SHARED_KEPT:
            self._shared.pop(next(iter(self._shared)))

    def _open_prefill(self, strict: bool):
        """`TorchPrefill` of this file, or None where it does not apply (ValueError instead with ``strict``; not
        tried for a file over `AUTO_TORCH_PREFILL_MAX_BYTES` without it)."""
        from .llamacpp_prefill import shared_prefill

        if not strict and os.path.getsize(self._path) > AUTO_TORCH_PREFILL_MAX_BYTES:
            return None
        try:
            return shared_prefill(self._path, self._n_threads)
        except ValueError:
            if strict:
                raise
            return None

    def _check_prefill(self, prefill, min_tokens: int | None, strict: bool) -> None:
        """Use `prefill` for prompts of `min_tokens` or more (None: the auto threshold for its kind of products)
        once it passes `check_state_format` against this context; without ``strict`` a llama.cpp or a model it
        does not reproduce leaves prompts to llama.cpp's own prefill."""
        from .llamacpp_prefill import check_state_format

        try:
            probe = self._tok.encode("The state of a prompt, written by torch for llama.cpp.")
            self._state_format = check_state_format(prefill, self._ctx, self._decode_seq0, probe)
        except ValueError:
            if strict:
                raise
            return
        finally:
            self._mem.clear()
        if min_tokens is None:
            min_tokens = AUTO_TORCH_PREFILL if prefill.native else AUTO_TORCH_PREFILL_F32
        self._prefill, self.torch_prefill = prefill, min_tokens

    def _score(self, layout: TreeLayout, return_hidden: bool):
        rows = self._pass(layout, return_hidden)
        if return_hidden:
            try:
                logits = read_rows(L.llama_get_logits_ith, self._ctx, rows, self._n_vocab)
                return logits, read_rows(L.llama_get_embeddings_ith, self._ctx, rows, self._n_embd)
            finally:
                L.llama_set_embeddings(self._ctx, False)
        return read_rows(L.llama_get_logits_ith, self._ctx, rows, self._n_vocab)

    def _score_argmax(self, layout: TreeLayout) -> torch.Tensor:
        return argmax_rows(self._ctx, self._pass(layout, False), self._n_vocab)

    def _score_next(self, layout: TreeLayout) -> torch.Tensor:
        return torch.from_numpy(logits_view(self._ctx, self._pass(layout, False)[0], self._n_vocab))

    @property
    def pending_scored(self) -> bool:
        return self._prescored is not None

    def _pass(self, layout: TreeLayout, return_hidden: bool) -> list[int]:
        """Decode pending and the tree; the batch index of each output row [N + 1]. With ``return_hidden``
        embeddings are left on for the caller to read (and switch off). A plain step right after the prefill
        reads pending's row of the prefill's last batch instead (`pending_scored`)."""
        self._check_open()
        row, self._prescored = self._prescored, None
        if row is not None and layout.n == 0 and not return_hidden:
            return [row]
        if layout.n + 1 > self._n_batch:
            raise ValueError(f"tree of {layout.n} nodes exceeds n_batch - 1 = {self._n_batch - 1}")
        n_leaves = len(layout.leaves)
        if n_leaves > self._max_leaves:
            raise ValueError(f"tree has {n_leaves} leaves > max_tree_leaves={self._max_leaves}")
        base = self._n_past - 1            # position of pending
        self._drop_uncommitted(base)
        order = layout.order               # batch slot j + 1 holds node order[j]
        if n_leaves <= 1:                  # plain step or chain: everything in sequence 0
            seq_ids = None
        else:
            for k in range(1, n_leaves):
                self._mem.cp(0, k, -1, -1)
            sets = layout.leaf_sets()
            seq_ids = [list(range(n_leaves))] + [sets[i] for i in order]
        tokens = [self._pending] + [layout.tokens[i] for i in order]
        positions = [base] + [base + layout.depth[i] for i in order]
        self._batch.fill(tokens, positions, seq_ids, outputs=True)
        self._dirty = True
        self._scored_leaves = n_leaves
        slot = _slots(layout)
        rows = [0] + [slot[i] for i in range(layout.n)]   # batch slot of each output row
        if return_hidden:
            L.llama_set_embeddings(self._ctx, True)
        try:
            self._decode()
        except BaseException:
            if return_hidden:
                L.llama_set_embeddings(self._ctx, False)
            raise
        return rows

    def _commit(self, layout: TreeLayout, path: list[int]) -> None:
        self._check_open()
        self._prescored = None
        base = self._n_past - 1
        slot = _slots(layout)
        # the leading part of the path that sits in the cells right after pending
        in_order = next((j for j, node in enumerate(path) if slot[node] != j + 1), len(path))
        mem = self._mem
        if self.exact_layout and in_order < len(path):
            keep_end = base + 1 + in_order
            mem.rm(0, keep_end, -1)
            if self._scored_leaves > 1:
                mem.keep(0)
            rest = [layout.tokens[i] for i in path[in_order:]]
            self._decode_seq0(rest, keep_end)
            self.recomputed_tokens += len(rest)
        else:
            end = base + 1 + len(path)     # first position past the accepted nodes
            if self._scored_leaves > 1:
                leaf = layout.leaf_of()[path[-1]] if path else 0
                if leaf != 0:              # re-point sequence 0 at the accepted branch
                    mem.rm(0, base + 1, -1)
                    mem.cp(leaf, 0, base + 1, end)
            mem.rm(0, end, -1)
            if self._scored_leaves > 1:
                mem.keep(0)
        self._dirty = False
        self._scored_leaves = 0

    def _truncate(self, n_keep: int) -> None:
        self._check_open()
        self._drop_from(n_keep)

    # ------------------------------------------------------------------ helpers
    def _drop_uncommitted(self, base: int) -> None:
        """Remove whatever an uncommitted score left: cells at positions >= pending's."""
        if self._dirty:
            self._drop_from(base)

    def _drop_from(self, pos: int) -> None:
        """Free every cell at position >= ``pos``, in any sequence; the rest stays in sequence 0 only."""
        self._prescored = None
        self._mem.rm(-1, pos, -1)
        if self._scored_leaves > 1:
            self._mem.keep(0)
        self._dirty = False
        self._scored_leaves = 0

    def _decode_seq0(self, tokens: list[int], start: int, last_out: bool = False) -> int | None:
        """Evaluate ``tokens`` into sequence 0 at positions start.., in chunks, no outputs; with ``last_out`` the
        last token's logits out, and its batch index returned."""
        row = None
        for off in range(0, len(tokens), self._n_batch):
            chunk = tokens[off:off + self._n_batch]
            first = start + off
            self._batch.fill(chunk, range(first, first + len(chunk)), None, outputs=False)
            if last_out and off + len(chunk) == len(tokens):
                row = len(chunk) - 1
                self._batch.raw.logits[row] = 1
            self._decode()
        return row

    def _check_open(self) -> None:
        if self._ctx is None:
            raise RuntimeError("this LlamaCppBackend is closed")

    def _decode(self) -> None:
        decode(self._ctx, self._batch)

    def close(self) -> None:
        """Free the native context and batch (idempotent); the model goes with its last user."""
        if getattr(self, "_batch", None) is not None:
            self._batch.close()
            self._batch = None
        for c in (getattr(self, "_main", None), getattr(self, "_long", None)):
            if c is not None:
                c.free()
        self._ctx = self._main = self._long = None
        self._model = None

    def __del__(self) -> None:  # pragma: no cover - interpreter shutdown order varies
        try:
            self.close()
        except Exception:
            pass


class _Context:
    """A llama.cpp context of the model (`new_context`'s arguments) and what is kept per context: its KV memory and
    the sequence states of recurring prompt parts (`LlamaCppBackend._restore_shared`)."""

    def __init__(self, model, **kw) -> None:
        self.ptr = new_context(model, **kw)
        self.mem = KVMemory(self.ptr)
        self.shared: dict[tuple[int, ...], bytes] = {}  # recurring prompt part -> its sequence state (LRU order)

    def free(self) -> None:
        """Free the native context (call once); returns None, for ``ctx = ctx.free()``."""
        L.llama_free(self.ptr)


def _slots(layout: TreeLayout) -> list[int]:
    """[N] batch slot of each node (pending is slot 0, nodes follow in DFS preorder)."""
    slot = [0] * layout.n
    for j, node in enumerate(layout.order):
        slot[node] = j + 1
    return slot
