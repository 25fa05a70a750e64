"""Torch target backend: any Hugging Face causal LM with tree attention.

A tree pass feeds ``[pending, node_0 .. node_{N-1}]`` with explicit
``position_ids = n_past - 1 + depth`` and a 4-D additive attention mask
[1, 1, N + 1, n_past - 1 + N + 1] (0 = attend, -inf = masked, model dtype):
every row sees the whole committed cache, pending, itself and its ancestors.
The pass appends N + 1 rows to the ``DynamicCache``; ``commit`` gathers the
accepted rows into place and crops (``torch_cache.keep_rows``), a new
``score`` first crops back to the committed length.

Plain decoding (N = 0) passes no mask at all, exactly like ``generate`` does.
Models with sliding-window layers get ``n_ctx`` clamped to the smallest window,
so the window never takes effect and the explicit tree mask stays exact.

Plain Llama-family models run through `torch_llama.LeanLlama` instead (its own static cache,
the same visibility as a boolean mask); the other models through ``transformers``' forward.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import os

import torch

from . import skinny
from .base import Backend
from .gguf_file import require_gguf
from .hf_tokenizer import HFTokenizer
from .torch_cache import keep_rows, new_cache, truncate
from .torch_llama import FEW, LeanLlama, check_taps, cpu_bf16, hidden_features, supports
from .tree import TreeLayout, ancestor_mask

__all__ = ["TorchBackend", "resolve_dtype", "resolve_model_source"]


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16, "f16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype | None, device: str = "cpu") -> torch.dtype:
    """A torch dtype from a name; "auto" (or None) = bfloat16 where the hardware computes it natively
    (a CPU with AVX512-BF16 / AMX through oneDNN, a CUDA device that supports it), else float32.

    On 2 CPU cores SmolLM2-135M is memory-bound: a float32 step reads 540 MB of weights (40 ms through
    transformers), a bfloat16 step half that (22 ms), and scoring 8 tokens costs 1.1x one step.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if str(device).startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_bf16() else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose auto, float32, bfloat16 or float16")
    return _DTYPES[dtype]


def resolve_model_source(model: str) -> tuple[str, dict]:
    """(directory, extra from_pretrained kwargs) for a local model dir or GGUF file."""
    if os.path.isdir(model):
        return model, {}
    if not os.path.exists(model):
        raise ValueError(f"model not found: {model!r} (a local directory or a .gguf file)")
    path = require_gguf(model)
    return os.path.dirname(os.path.abspath(path)), {"gguf_file": os.path.basename(path)}


@contextlib.contextmanager
def quiet_gguf_dtype_warning():
    """Hide transformers' (5.x) warning that a GGUF loaded in bfloat16 keeps packed weights and casts every matmul:
    it is given before the file's header is read, also for files it then dequantizes, as it does here (without the
    `kernels` package, or for a BF16 file): the layers are plain `nn.Linear` in the dtype asked for."""
    log = logging.getLogger("transformers.quantizers.quantizer_gguf")

    def drop(record: logging.LogRecord) -> bool:
        return "weights packed is fastest in float32" not in record.getMessage()

    log.addFilter(drop)
    try:
        yield
    finally:
        log.removeFilter(drop)


class TorchBackend(Backend):
    """One sequence of a ``transformers`` causal LM, with tree scoring and KV rollback.

    Args:
        model: a local Hugging Face model directory, or a GGUF file (dequantized
            by transformers; needs the ``gguf`` and ``accelerate`` packages).
        dtype: weights / compute dtype, a torch dtype or a name (float32 by default; "auto" picks
            bfloat16 where the hardware has it, see `resolve_dtype`); logits are returned as float32.
        device: torch device.
        n_ctx: context limit (default: the config's ``max_position_embeddings``).
        prefill_chunk: tokens per forward pass in ``reset`` (one pass for most prompts: the lean path's causal
            prefill skips the blocks above the diagonal, ~5% faster at 600-1500 tokens than passes of 512).
        attn_implementation: passed to ``from_pretrained`` (default ``"sdpa"``).
        lean: run plain Llama-family models through `torch_llama.LeanLlama` (static KV cache, fused
            matmuls: 1.3x faster steps on 2 CPU cores, same arithmetic); None = whenever it applies.
    """

    def __init__(self, model: str, *, dtype: torch.dtype | str = torch.float32, device: str = "cpu",
                 n_ctx: int | None = None, prefill_chunk: int = 2048,
                 attn_implementation: str = "sdpa", lean: bool | None = None) -> None:
        super().__init__()
        from transformers import AutoModelForCausalLM

        dtype = resolve_dtype(dtype, device)
        folder, extra = resolve_model_source(model)
        self._source = (folder, extra)
        self._path = model
        with quiet_gguf_dtype_warning():
            self.model = AutoModelForCausalLM.from_pretrained(
                folder, dtype=dtype, attn_implementation=attn_implementation,
                local_files_only=True, **extra).to(device).eval()
        self.device = torch.device(device)
        self.dtype = dtype
        cfg = self.model.config.get_text_config()
        self._n_vocab = int(self.model.get_output_embeddings().weight.shape[0])
        self._width = int(cfg.hidden_size)  # H: the final hidden state's part of a recorded feature row
        self._eps = float(getattr(cfg, "rms_norm_eps", 1e-6))  # the taps' RMS scaling (`tap_features`)
        self._n_ctx = _context_limit(cfg, n_ctx)
        self._chunk = prefill_chunk
        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._keep_kw = "logits_to_keep" in params
        self._cache = new_cache()
        self._tok: HFTokenizer | None = None
        self._feats: torch.Tensor | None = None  # [rows, H (1 + taps)] features of committed positions
        self._last_h: torch.Tensor | None = None  # [N+1, H (1 + taps)] of the last scored tree (while recording)
        self._taps: tuple[int, ...] = ()  # layers whose residual streams `record_features` keeps too
        self._rows: torch.Tensor | None = None  # float32 logit rows kept between passes (`_float_rows`)
        self._shared: tuple[int, ...] | None = None  # the leading part the lean cache holds (`_reset_shared`)
        if lean and not supports(self.model):
            raise ValueError(f"lean=True needs a plain Llama-family model, got {type(self.model).__name__}")
        self._lean = LeanLlama(self.model, self._n_ctx) if (lean is None and supports(self.model)) or lean else None

    # ------------------------------------------------------------------ properties
    @property
    def name(self) -> str:
        return f"torch:{os.path.basename(os.path.normpath(self._path))}"

    @property
    def cost_key(self) -> str:
        """dtype and forward path (lean, with packed weights or not, or transformers'): each has its own T(k)."""
        if self._lean is None:
            return str(self.dtype)
        if not self._lean.packed:
            return f"{self.dtype}|lean"
        head = self._lean.head
        return (f"{self.dtype}|lean|packed" + (f"|few{FEW}" if head.few else "")
                + (f"|skinny{skinny.ROWS}" if head.skinny else ""))

    @property
    def tokenizer(self) -> HFTokenizer:
        """Loaded on first use (GGUF tokenizers take a while to convert)."""
        if self._tok is None:
            from transformers import AutoTokenizer

            folder, extra = self._source
            hf = AutoTokenizer.from_pretrained(folder, local_files_only=True, **extra)
            self._tok = HFTokenizer(hf, getattr(self.model, "generation_config", None))
        return self._tok

    # ------------------------------------------------------------------ features
    def record_features(self, on: bool = True, taps: tuple[int, ...] = ()) -> None:
        """Keep the final (normed) hidden state of every committed position, for a feature-level draft
        head (`draft.head`) to read through `features`; with `taps`, also the residual stream after each
        of those layers (1 .. layers - 1), RMS-normalised (`torch_llama.tap_features`), joined to any taps
        kept already (`feature_taps`: several heads can read one target). Costs a copy of
        H (1 + len(taps)) floats per evaluated token; rows recorded before a change of taps are dropped."""
        taps = check_taps(taps, self.model.config.get_text_config().num_hidden_layers)
        taps = tuple(sorted({*taps, *(self._taps if self._feats is not None else ())}))
        if on and self._feats is not None and taps == self._taps:
            return  # recording these already: keep the rows
        self._taps = taps if on else ()
        self._feats = torch.zeros(0, self._width * (1 + len(self._taps))) if on else None
        self._shared = None  # the kept part's features are gone with the rows

    @property
    def feature_taps(self) -> tuple[int, ...]:
        """The layers whose residual streams follow f in each recorded feature row, ascending."""
        return self._taps

    def features(self, start: int, end: int) -> torch.Tensor:
        """Final hidden states [end - start, H] (float32; with taps [.., H (1 + taps)]) of committed positions
        start .. end - 1; every position before the pending one (n_past - 1) has one. ValueError unless recording."""
        if self._feats is None:
            raise ValueError("this backend does not record features: call record_features() first")
        if not 0 <= start <= end <= self._n_past - 1:
            raise ValueError(f"features({start}, {end}): positions with features are 0 .. {self._n_past - 2}")
        return self._feats[start:end]

    def _store(self, start: int, hidden: torch.Tensor) -> None:
        end = start + hidden.shape[0]
        if end > self._feats.shape[0]:
            grown = torch.zeros(max(end, 2 * self._feats.shape[0], 256), self._feats.shape[1])
            grown[:start] = self._feats[:start]
            self._feats = grown
        self._feats[start:end] = hidden.to("cpu", torch.float32)

    # ------------------------------------------------------------------ hooks
    @torch.inference_mode()
    def _reset(self, prefix: list[int]) -> None:
        self._cache = new_cache()
        self._shared = None  # rows 0 .. are rewritten with this prompt's own batch
        self._prefill(prefix, 0)

    @torch.inference_mode()
    def _reset_shared(self, prefix: list[int], shared: int) -> None:
        """The lean path keeps a recurring leading part (a chat template's system turn) in the cache between
        requests. That part is always prefilled as a batch of its own, so its rows are the same whatever follows
        and whichever request computed them; the rest is prefilled from row ``shared`` (its causal attention
        costs what a prefill from row 0 costs: `torch_llama.attend`'s blocks, docs/speed.md §18)."""
        if self._lean is None or not shared:
            self._reset(prefix)
            return
        part = tuple(prefix[:shared])  # (`record_features` drops it: its rows' features go with any change)
        if self._shared != part:
            self._prefill(prefix[:shared], 0)
            self._shared = part
        self._prefill(prefix[shared:], shared)

    def _prefill(self, tokens: list[int], offset: int) -> None:
        """Write `tokens` to the cache at rows offset .. (and record their features), in chunks."""
        rec = self._feats is not None
        for at in range(0, len(tokens), self._chunk):
            chunk = tokens[at:at + self._chunk]
            start = offset + at
            pos = torch.arange(start, start + len(chunk), device=self.device)  # [T]
            if self._lean is not None:
                out = self._lean.forward(torch.tensor(chunk, device=self.device), pos, start, None,
                                         last_only=True, hidden=rec, taps=self._taps)
                hidden = out[1] if rec else None
            else:
                out = self._forward(torch.tensor([chunk], device=self.device), pos[None], None, last_only=True,
                                    hidden=rec)
                hidden = self._hidden(out) if rec else None
            if rec:
                self._store(start, hidden)

    @torch.inference_mode()
    def _score(self, layout: TreeLayout, return_hidden: bool):
        logits, hidden = self._pass(layout, return_hidden)
        logits = logits.to("cpu", torch.float32)                                     # [N+1, V]
        return (logits, hidden[:, :self._width]) if return_hidden else logits

    @torch.inference_mode()
    def _score_argmax(self, layout: TreeLayout) -> torch.Tensor:
        """`_score`'s rows reduced to their argmax without a fresh float32 copy: into `_float_rows`' buffer, then
        numpy's argmax (first among ties, as torch's; 75 against 300 us for 8 rows of 49,152 on 2 cores)."""
        rows = self._float_rows(self._pass(layout, False)[0])
        return torch.from_numpy(rows.numpy().argmax(-1)).long()

    @torch.inference_mode()
    def _score_next(self, layout: TreeLayout) -> torch.Tensor:
        """The plain step's row [V] in `_float_rows`' buffer: a view that the next pass overwrites (as llama.cpp's)."""
        return self._float_rows(self._pass(layout, False)[0])[0]

    def _float_rows(self, logits: torch.Tensor) -> torch.Tensor:
        """logits [R, V] as float32 CPU rows in a buffer kept between passes (a view of it). A fresh [R, V] float32
        tensor at every pass lands on fresh pages: on the 2-core Zen 5 VM ~190 page faults, ~2 ms of a ~30 ms
        10-row pass (docs/speed.md §35)."""
        R, V = logits.shape
        if self._rows is None or self._rows.shape[0] < R or self._rows.shape[1] != V:
            self._rows = torch.empty(max(R, 16), V)
        out = self._rows[:R]
        out.copy_(logits)
        return out

    @torch.inference_mode()
    def _pass(self, layout: TreeLayout, return_hidden: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One forward over pending + the tree: (logits [N+1, V] in the model's dtype and device, the hidden rows
        [N+1, H (1 + taps)] float32 CPU or None); while recording features, keeps the hidden rows for `_commit`."""
        rec = self._feats is not None
        need_h = return_hidden or rec  # recording keeps every scored row's hidden state for `_commit`
        base = self._n_past - 1                     # committed rows in the cache
        ids = torch.tensor([self._pending, *layout.tokens], device=self.device)      # [N+1]
        pos = torch.tensor([base, *(base + d for d in layout.depth)], device=self.device)
        seen = None if layout.n == 0 else self._visible(layout, base)                 # [N+1, base+N+1]
        if self._lean is not None:
            out = self._lean.forward(ids, pos, base, seen, hidden=need_h, taps=self._taps)
            logits, hidden = out if need_h else (out, None)
        else:
            truncate(self._cache, base)
            mask = None if seen is None else _additive(seen, self.dtype)[None, None]
            out = self._forward(ids[None], pos[None], mask, hidden=need_h)
            logits, hidden = out.logits[0], self._hidden(out) if need_h else None
        hidden = hidden.to("cpu", torch.float32) if need_h else None                 # [N+1, H]
        if rec:
            self._last_h = hidden
        return logits, hidden

    @torch.inference_mode()
    def _commit(self, layout: TreeLayout, path: list[int]) -> None:
        start = self._n_past                        # first row after pending
        rows = torch.tensor([start + j for j in path], dtype=torch.long, device=self.device)
        if self._lean is not None:
            self._lean.keep_rows(start, rows)
        else:
            keep_rows(self._cache, start, rows)
        if self._feats is not None:  # pending and the accepted nodes now have committed features
            self._store(start - 1, self._last_h[[0, *(j + 1 for j in path)]])

    def _truncate(self, n_keep: int) -> None:
        truncate(self._cache, n_keep)  # the lean cache needs nothing: rows past n_past are rewritten
        if self._shared is not None and n_keep < len(self._shared):
            self._shared = None  # rows of the kept part will be rewritten

    # ------------------------------------------------------------------ helpers
    def _visible(self, layout: TreeLayout, base: int) -> torch.Tensor:
        """Bool [N+1, base+N+1]: every row sees the committed cache, pending, itself and its ancestors."""
        seen = torch.ones(layout.n + 1, base + layout.n + 1, dtype=torch.bool, device=self.device)
        seen[:, base:] = ancestor_mask(layout).to(self.device)
        return seen

    def _hidden(self, out) -> torch.Tensor:
        """[T, H (1 + taps)]: the final normed hidden states of a transformers forward, then the taps'."""
        return hidden_features(out.hidden_states, self._taps, self._eps)

    def _forward(self, ids, pos, mask, *, last_only: bool = False, hidden: bool = False):
        """One model call on the cache. ids, pos: LongTensor [1, T]; mask: [1, 1, T, S+T] or None."""
        kw = {self._cache_kw: self._cache, "use_cache": True, "position_ids": pos,
              "attention_mask": mask}
        if last_only and self._keep_kw:
            kw["logits_to_keep"] = 1
        if hidden:
            kw["output_hidden_states"] = True
        return self.model(input_ids=ids, **kw)


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where ``allowed`` (BoolTensor), -inf elsewhere, in ``dtype``."""
    out = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return out.masked_fill_(~allowed, float("-inf"))


def _context_limit(cfg, n_ctx: int | None) -> int:
    """n_ctx, defaulting to max_position_embeddings and clamped below any sliding window."""
    limit = n_ctx or getattr(cfg, "max_position_embeddings", None) or 2048
    layer_types = getattr(cfg, "layer_types", None) or ()
    window = getattr(cfg, "sliding_window", None)
    if window and any("sliding" in str(t) for t in layer_types):
        limit = min(limit, int(window))
    return int(limit)
