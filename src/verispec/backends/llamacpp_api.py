"""Thin helpers over llama-cpp-python's low-level ctypes bindings.

Everything version-dependent about the binding lives here: which KV-cache /
memory functions exist (``llama_memory_*`` since llama.cpp mid-2025,
``llama_kv_self_*`` before, ``llama_kv_cache_*`` before that), model/context
creation, batch filling and reading logits / embeddings.
"""
from __future__ import annotations

import ctypes
import logging
from typing import Sequence

import numpy as np
import torch

import llama_cpp as L

__all__ = ["KVMemory", "ModelHandle", "TokenBatch", "amx_build", "argmax_rows", "decode", "new_context",
           "read_rows", "quiet_logs"]

_BACKEND_READY = False


def quiet_logs(verbose: bool) -> None:
    """Route llama.cpp's native log through llama-cpp-python's logger at the wanted level."""
    logging.getLogger("llama-cpp-python").setLevel(logging.DEBUG if verbose else logging.ERROR)


def amx_build() -> bool:
    """Whether this llama.cpp build carries its AMX int8 kernels (``AMX_INT8 = 1`` in its system info).

    Those kernels take quantized weights (Q4_0, Q4_1, Q8_0, K-quants) repacked into an extra buffer and, in the
    llama.cpp that llama-cpp-python 0.3.36 bundles, can run a tile instruction before a valid tile configuration is
    loaded (llama.cpp PR #26954: the configuration on the stack is compiled away): the process dies of SIGILL at
    its first batch, e.g. the shipped Q4_1 file's prefill on an Intel Xeon with AMX, built by gcc 12 with
    ``-march=native``. `ModelHandle` then loads models without the extra buffers (bfloat16 and float weights never
    used them); ``scripts/setup.sh`` builds llama-cpp-python without AMX on such a CPU."""
    info = L.llama_print_system_info()
    return b"AMX_INT8 = 1" in (info if isinstance(info, bytes) else str(info).encode())


class ModelHandle:
    """Owns a loaded ``llama_model *``; it is freed when the last Python reference goes.

    The backend and its tokenizer both hold the handle, so a tokenizer that
    outlives (or is taken from) a closed backend stays valid.
    """

    def __init__(self, path: str, n_gpu_layers: int = 0) -> None:
        global _BACKEND_READY
        if not _BACKEND_READY:
            L.llama_backend_init()
            _BACKEND_READY = True
        params = L.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        if amx_build() and hasattr(params, "use_extra_bufts"):
            params.use_extra_bufts = False  # no AMX repacking: see `amx_build`
        self.ptr = L.llama_model_load_from_file(path.encode("utf-8"), params)
        if not self.ptr:
            raise ValueError(f"llama.cpp could not load model {path!r}")

    def __del__(self) -> None:  # pragma: no cover - runs at garbage collection
        ptr, self.ptr = getattr(self, "ptr", None), None
        if ptr and L is not None and L.llama_model_free is not None:
            L.llama_model_free(ptr)


def new_context(model, *, n_ctx: int, n_batch: int, n_seq_max: int, n_threads: int,
                flash_attn: bool | None = None):
    """A context whose KV cache is shared by ``n_seq_max`` sequence ids (unified cells).

    The unified cache lets one cell belong to several sequences, which is how a
    draft tree's shared prefix is stored once.  ``flash_attn``: None = llama.cpp's
    choice (on for the CPU), True / False force it.
    """
    params = L.llama_context_default_params()
    params.n_ctx = n_ctx
    params.n_batch = n_batch
    params.n_ubatch = n_batch  # one forward pass per score() call
    params.n_seq_max = n_seq_max
    params.n_threads = n_threads
    params.n_threads_batch = n_threads
    params.embeddings = False
    if flash_attn is not None and hasattr(params, "flash_attn_type"):
        params.flash_attn_type = int(flash_attn)  # LLAMA_FLASH_ATTN_TYPE_{DISABLED, ENABLED}
    if hasattr(params, "kv_unified"):
        params.kv_unified = True
    ctx = L.llama_init_from_model(model, params)
    if not ctx:
        raise RuntimeError("llama.cpp could not create a context (n_ctx too large for memory?)")
    return ctx


def decode(ctx, batch: "TokenBatch") -> None:
    """``llama_decode`` of the batch; RuntimeError with llama.cpp's code if it fails."""
    rc = L.llama_decode(ctx, batch.raw)
    if rc != 0:
        raise RuntimeError(f"llama_decode failed with code {rc}")


class KVMemory:
    """The sequence operations on a context's KV cache, whatever the binding calls them.

    Positions ranges are half-open ``[p0, p1)``; a negative bound means "open".
    """

    def __init__(self, ctx) -> None:
        if hasattr(L, "llama_get_memory"):
            handle, prefix = L.llama_get_memory(ctx), "llama_memory_"
        elif hasattr(L, "llama_kv_self_seq_rm"):
            handle, prefix = ctx, "llama_kv_self_"
        else:
            handle, prefix = ctx, "llama_kv_cache_"
        self._h = handle
        self._rm = getattr(L, prefix + "seq_rm")
        self._cp = getattr(L, prefix + "seq_cp")
        self._keep = getattr(L, prefix + "seq_keep")
        self._clear = getattr(L, prefix + "clear")
        self.api = prefix.rstrip("_")

    def clear(self) -> None:
        """Drop every cell."""
        if self.api == "llama_memory":
            self._clear(self._h, True)
        else:
            self._clear(self._h)

    def rm(self, seq: int, p0: int, p1: int = -1) -> None:
        """Remove sequence ``seq`` (-1 = any) from the cells with positions in [p0, p1)."""
        if not self._rm(self._h, seq, p0, p1):
            raise RuntimeError(f"llama.cpp refused to remove seq {seq} positions [{p0}, {p1})")

    def cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        """Add ``dst`` to every cell of ``src`` with position in [p0, p1) (no data copy when unified)."""
        self._cp(self._h, src, dst, p0, p1)

    def keep(self, seq: int) -> None:
        """Drop every cell not in ``seq`` and strip the other sequence ids from the rest."""
        self._keep(self._h, seq)


class TokenBatch:
    """A reusable ``llama_batch`` of up to ``capacity`` tokens, each in up to ``n_seq_max`` sequences."""

    def __init__(self, capacity: int, n_seq_max: int) -> None:
        self.capacity = capacity
        self.n_seq_max = n_seq_max
        self.raw = L.llama_batch_init(capacity, 0, n_seq_max)

    def fill(self, tokens: Sequence[int], positions: Sequence[int],
             seq_ids: Sequence[Sequence[int]] | None, outputs: bool) -> None:
        """Set the batch content; ``seq_ids=None`` puts every token in sequence 0."""
        n = len(tokens)
        if n > self.capacity:
            raise ValueError(f"batch of {n} tokens exceeds capacity {self.capacity}")
        b = self.raw
        b.n_tokens = n
        flag = 1 if outputs else 0
        for i in range(n):
            b.token[i] = tokens[i]
            b.pos[i] = positions[i]
            b.logits[i] = flag
            if seq_ids is None:
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = 0
            else:
                ids = seq_ids[i]
                b.n_seq_id[i] = len(ids)
                row = b.seq_id[i]
                for k, s in enumerate(ids):
                    row[k] = s

    def close(self) -> None:
        """Free the native arrays (idempotent)."""
        if self.raw is not None:
            L.llama_batch_free(self.raw)
            self.raw = None


def _row(getter, ctx, i: int, width: int) -> np.ndarray:
    """Output row of batch token ``i`` of the last decode: a float32 view [width] of llama.cpp's buffer (valid until
    the next decode)."""
    ptr = getter(ctx, i)
    if not ptr:
        raise RuntimeError(f"llama.cpp returned no output for batch token {i}")
    return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(width,))


def argmax_rows(ctx, batch_index: Sequence[int], width: int) -> torch.Tensor:
    """LongTensor [len(batch_index)]: the argmax (first among ties) of each logit row, found in llama.cpp's buffer
    without copying the rows out (numpy's argmax, as torch's, returns the first maximum)."""
    return torch.tensor([int(_row(L.llama_get_logits_ith, ctx, i, width).argmax()) for i in batch_index])


def seq_state_get(ctx, seq: int = 0) -> bytes:
    """Sequence ``seq``'s cache state (llama.cpp's ``llama_state_seq_get_data``)."""
    size = L.llama_state_seq_get_size(ctx, seq)
    raw = (ctypes.c_uint8 * size)()
    if L.llama_state_seq_get_data(ctx, raw, size, seq) != size:
        raise RuntimeError("llama.cpp did not return its sequence state")
    return bytes(raw)


def seq_state_set(ctx, state: bytes | np.ndarray, seq: int = 0) -> bool:
    """Write a sequence state (`seq_state_get`'s, or bytes `llamacpp_prefill.write_state` built) into sequence
    ``seq`` of a cleared cache, read in place; whether llama.cpp took it."""
    buf = np.frombuffer(state, np.uint8)
    ptr = ctypes.cast(buf.ctypes.data, ctypes.POINTER(ctypes.c_uint8))
    return L.llama_state_seq_set_data(ctx, ptr, buf.nbytes, seq) == buf.nbytes


def logits_view(ctx, i: int, width: int) -> np.ndarray:
    """The logits of batch token ``i`` of the last decode: a float32 view [width] of llama.cpp's buffer, valid until
    the next decode (a sampled plain step reads it in place: a copy costs 0.2-0.3 ms on 2 cores)."""
    return _row(L.llama_get_logits_ith, ctx, i, width)


def read_rows(getter, ctx, batch_index: Sequence[int], width: int) -> torch.Tensor:
    """Output rows of the last decode as a float32 tensor [len(batch_index), width].

    ``getter`` is ``llama_get_logits_ith`` or ``llama_get_embeddings_ith``; row r
    of the result is the output of batch token ``batch_index[r]``.
    """
    out = np.empty((len(batch_index), width), dtype=np.float32)
    for r, i in enumerate(batch_index):
        out[r] = _row(getter, ctx, i, width)
    return torch.from_numpy(out)
