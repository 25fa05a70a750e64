"""The llama.cpp backend's prompt prefill through torch: a BF16 GGUF's keys and values computed with oneDNN's
products and written into llama.cpp's KV cache through its sequence-state API.

Why: on 2 CPU cores llama.cpp's prefill of SmolLM2-135M in BF16 runs at ~700 tokens/s (1.18 s for 900 tokens,
flash attention on) on a CPU with native bfloat16, torch's oneDNN products at ~1,000 (0.86 s, the state written
back included). On an AVX2 CPU without it llama.cpp runs at ~280 tokens/s (3.2 s), torch's float32 products at
~400 (2.3 s). On a long prompt (summarization, RAG) the prefill is 40-55% of a request, so a faster one is worth
as much as speculation.

What is computed is llama.cpp's arithmetic where it can be: the residual stream and the norms in float32, each
product's input rounded to bfloat16 (as ggml's BF16 dot product rounds it), RoPE on adjacent pairs (the GGUF's
Q and K rows are stored permuted for it, so the keys come out in the cache's own order), attention in float32
over keys and values rounded to float16 (the cache's type; `attend`'s kernel where the CPU has AVX-512). With
native bfloat16, oneDNN rounds each product's output to bfloat16 where ggml keeps float32: the next token's
logits differ from llama.cpp's own prefill by up to ~0.3 (SmolLM2, 900 tokens), the size of BF16's
batched-against-single-row rounding (docs/speed.md §1); with float32 products (`_Product`) by up to ~0.2, the
sums' order. Every configuration of an engine prefills the same
way, so speculation stays lossless against the engine's own plain decoding.

The state written (llama.cpp's ``llama_state_seq_set_data`` for sequence 0, the version pinned here): an 8-byte
tag, u32 n_stream = 1, u32 cell count N, per cell (i32 position, u32 1, i32 0), u32 v_trans, u32 n_layer, then
per layer the keys (i32 ggml type, u64 row bytes, N rows) and the values (the same, or with v_trans: i32 type,
u32 element bytes, u32 row width, then the columns). `check_state_format` has llama.cpp prefill a few tokens and
demands that this module, reading its state and writing it back, gives the same bytes, and that torch's keys
and values of those tokens agree with llama.cpp's: a llama.cpp that changed the format, a model this forward does
not reproduce, or a permuted head fails there, at load, not in a generation.
"""
from __future__ import annotations

import os
import weakref

import numpy as np
import torch
import torch.nn.functional as F

from . import attend
from .gguf_file import GGML_BF16, GGML_F32, GGUFTensors
from .llamacpp_api import seq_state_get, seq_state_set
from .torch_llama import PackedLinear, cpu_bf16

__all__ = ["TorchPrefill", "check_state_format", "read_state", "shared_prefill", "write_state"]

# the MLP runs on blocks of this many rows: on the Zen 5 VM a [T, 2 I] float32 temporary over ~12 MB page-faulted
# on every allocation (the prefill of 1,186 tokens 3% slower unblocked; no difference on the Zen 4; docs/speed.md §34)
_MLP_ROWS = 512
_F16 = 1  # ggml type of the cache's rows (llama.cpp's default type_k / type_v)


class TorchPrefill:
    """Keys and values of a prompt for llama.cpp's cache, computed by torch from a BF16 Llama GGUF.

    Args:
        path: the GGUF (architecture ``llama``, matrices in BF16, norms in F32).
        n_threads: torch threads while prefilling (the engine runs torch on one thread beside llama.cpp).

    ``native`` says whether its products are bfloat16 ones (a CPU that computes bfloat16 natively) or float32 ones
    on the same values (`_Product`; the weights take twice the memory). ValueError for another architecture or
    format (nothing else is reproduced here).
    """

    def __init__(self, path: str, n_threads: int = 1) -> None:
        try:
            self._load(GGUFTensors(path))
        except KeyError as e:
            raise ValueError(f"torch prefill: {path!r} lacks {e}") from None
        self.n_threads = n_threads

    def _load(self, g: GGUFTensors) -> None:
        arch = g.meta.get("general.architecture")
        if arch != "llama":
            raise ValueError(f"torch prefill reproduces llama-architecture GGUFs, not {arch!r}")
        m = lambda key: g.meta[f"llama.{key}"]  # noqa: E731
        self.n_layer, C = int(m("block_count")), int(m("embedding_length"))
        self.n_head, self.n_kv = int(m("attention.head_count")), int(m("attention.head_count_kv"))
        self.head_dim = C // self.n_head
        if int(g.meta.get("llama.rope.dimension_count", self.head_dim)) != self.head_dim:
            raise ValueError("torch prefill needs RoPE over whole heads")
        self.eps = float(m("attention.layer_norm_rms_epsilon"))
        self.base = float(g.meta.get("llama.rope.freq_base", 10000.0))
        scaling = g.meta.get("llama.rope.scaling.type", "none")
        if scaling not in ("none", "linear") or float(g.meta.get("llama.rope.scaling.factor", 1.0) or 1.0) != 1.0:
            raise ValueError(f"torch prefill computes plain RoPE; this GGUF scales it ({scaling})")
        known = {"token_embd.weight", "output_norm.weight", "output.weight"} | {
            f"blk.{i}.{t}.weight" for i in range(self.n_layer) for t in
            ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")}
        for name, kind in g.types.items():
            if name not in known:  # biases, RoPE frequency factors, ...: a forward this one does not compute
                raise ValueError(f"torch prefill does not compute the tensor {name} of this GGUF")
            want = (GGML_F32,) if name.endswith("norm.weight") else (GGML_BF16,)
            if name != "output.weight" and kind not in want:
                raise ValueError(f"torch prefill needs a BF16 GGUF; {name} has ggml type {kind}")
        bf16 = lambda name: torch.from_numpy(g.tensor(name).view(np.int16).copy()).view(torch.bfloat16)  # noqa: E731
        self.native = cpu_bf16()  # bfloat16 products, else float32 ones (`_Product`)
        prod = lambda blk, *parts: _Product(  # noqa: E731
            torch.cat([bf16(f"{blk}{n}.weight") for n in parts]), self.native)
        f32 = lambda name: torch.from_numpy(g.tensor(name).copy())  # noqa: E731
        self._embed = g.tensor("token_embd.weight")  # [V, C] bf16 bits, read per prompt from the mapped file
        self.layers = []
        for i in range(self.n_layer):
            p = f"blk.{i}."
            self.layers.append((f32(p + "attn_norm.weight"), prod(p, "attn_q", "attn_k", "attn_v"),  # [(H + 2 Hk) D, C]
                                prod(p, "attn_output"), f32(p + "ffn_norm.weight"),
                                prod(p, "ffn_gate", "ffn_up"), prod(p, "ffn_down")))  # gate-up [2 I, C]
        self._gguf = g  # keeps the mapped file (the embedding rows) open

    def _rope_tables(self, T: int) -> torch.Tensor:
        """cos + i sin [T, 1, D/2] (complex64) of the angles pos base^(-2i/D) at positions 0 .. T - 1 (once a
        prompt)."""
        D = self.head_dim
        inv = self.base ** (-torch.arange(0, D, 2, dtype=torch.float32) / D)  # [D/2]
        theta = torch.arange(T, dtype=torch.float32)[:, None] * inv  # [T, D/2]
        return torch.polar(torch.ones_like(theta), theta)[:, None]

    def _rope(self, x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
        """llama.cpp's normal RoPE: pairs (x[2i], x[2i+1]) rotated by `_rope_tables`' angles, each pair a complex
        number times cos + i sin (one op: ~0.2 ms for 671 rows of 9 heads against ~1.3 ms for the real parts
        computed apart and interleaved). x [T, heads, D]."""
        T, heads, D = x.shape
        return torch.view_as_real(torch.view_as_complex(x.reshape(T, heads, D // 2, 2)) * rot).flatten(-2)

    @torch.inference_mode()
    def kv(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of tokens ``ids`` at positions 0 .. T - 1, as llama.cpp caches them:
        k, v float16 [n_layer, T, Hk D] (heads side by side, each head's dims in the GGUF's order)."""
        T, H, Hk, D = len(ids), self.n_head, self.n_kv, self.head_dim
        threads = torch.get_num_threads()
        torch.set_num_threads(self.n_threads)
        try:
            x = torch.from_numpy(self._embed[np.asarray(ids)].view(np.int16)).view(torch.bfloat16).float()  # [T, C]
            rot = self._rope_tables(T)
            ks, vs = [], []
            for i, (ln1, wqkv, wo, ln2, wgu, wdown) in enumerate(self.layers):
                qkv = wqkv(F.rms_norm(x, x.shape[-1:], eps=self.eps) * ln1)  # [T, (H + 2 Hk) D]
                q = self._rope(qkv[:, :H * D].view(T, H, D), rot)
                k = self._rope(qkv[:, H * D:(H + Hk) * D].view(T, Hk, D), rot).half()  # [T, Hk, D]
                v = qkv[:, (H + Hk) * D:].view(T, Hk, D).half()
                ks.append(k.view(T, Hk * D))
                vs.append(v.view(T, Hk * D))
                if i + 1 == self.n_layer:
                    break  # the last layer's output feeds no cache
                x = x + wo(attend.attention(q, k, v).reshape(T, H * D))  # attention [T, H, D]
                for a in range(0, T, _MLP_ROWS):  # in row blocks: [rows, 2 I] temporaries stay small
                    xa = x[a:a + _MLP_ROWS]
                    gate, up = wgu(F.rms_norm(xa, xa.shape[-1:], eps=self.eps) * ln2).chunk(2, -1)
                    xa += wdown(F.silu(gate) * up)
            return torch.stack(ks), torch.stack(vs)
        finally:
            torch.set_num_threads(threads)

    def fill(self, ctx, ids: list[int], tag: bytes, v_trans: bool) -> None:
        """Replace sequence 0 of ``ctx``'s (cleared) cache by tokens ``ids`` at positions 0 .. T - 1."""
        k, v = self.kv(ids)
        if not seq_state_set(ctx, write_state(tag, k.numpy(), v.numpy(), v_trans)):
            raise RuntimeError(f"llama.cpp refused the prefilled state of {len(ids)} tokens")


_LOADED: "weakref.WeakValueDictionary[tuple, TorchPrefill]" = weakref.WeakValueDictionary()


def shared_prefill(path: str, n_threads: int) -> TorchPrefill:
    """One `TorchPrefill` per file and thread count while any backend holds it (a benchmark's plain and
    speculative engines share the packed weights, ~270 MB for SmolLM2)."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns, n_threads)
    prefill = _LOADED.get(key)
    if prefill is None:
        prefill = _LOADED[key] = TorchPrefill(path, n_threads)
    return prefill


class _Product:
    """x [T, in] float32 -> x W^T [T, out] float32 for a bfloat16 weight W [out, in], x rounded to bfloat16 first
    (as ggml's BF16 dot product rounds its input), through oneDNN's packed kernel only (the plain copy dropped):
    - bfloat16 with ``native`` (a CPU that computes it natively: AVX512-BF16, AMX); oneDNN rounds the output to
      bfloat16;
    - else float32 on the same values: every product of two bfloat16 values is exact in float32 and the sums are
      float32 ones, as ggml's (twice the memory; bfloat16 emulated would be slower than llama.cpp's own prefill).
    ValueError where oneDNN has no such kernel."""

    def __init__(self, w: torch.Tensor, native: bool) -> None:
        self.native = native
        self._lin = PackedLinear(w if self.native else w.float(), small=False)
        if not self._lin.packed:
            raise ValueError("torch prefill needs oneDNN's packed bfloat16 or float32 kernels")
        self._lin.weight = None  # __call__ reads the packed copy only

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.bfloat16()
        return self._lin(x if self.native else x.float()).float()


def write_state(tag: bytes, k: np.ndarray, v: np.ndarray, v_trans: bool) -> np.ndarray:
    """llama.cpp's sequence state (see the module doc) of N cells at positions 0 .. N - 1 in sequence 0, from
    k, v float16 [n_layer, N, width]; uint8 [bytes]."""
    n_layer, N, width = k.shape
    row = width * 2
    parts = [np.frombuffer(tag, np.uint8), np.array([1, N], np.uint32)]
    meta = np.zeros((N, 3), np.int32)
    meta[:, 0], meta[:, 1] = np.arange(N), 1
    parts += [meta, np.array([int(v_trans), n_layer], np.uint32)]
    k_head = np.frombuffer(np.int32(_F16).tobytes() + np.uint64(row).tobytes(), np.uint8)
    for i in range(n_layer):
        parts += [k_head, k[i]]
    if v_trans:
        v_head = np.frombuffer(np.array([_F16, 2, width], np.uint32).tobytes(), np.uint8)
        for i in range(n_layer):
            parts += [v_head, np.ascontiguousarray(v[i].T)]
    else:
        for i in range(n_layer):
            parts += [k_head, v[i]]
    return np.concatenate([np.ascontiguousarray(p).reshape(-1).view(np.uint8) for p in parts])


def read_state(buf: bytes) -> tuple[bytes, np.ndarray, np.ndarray, bool]:
    """(tag, k, v, v_trans) of a one-sequence state that `write_state` can write (k, v float16 [n_layer, N, width]);
    ValueError for anything else (another layout, other cache types, cells not at positions 0 .. N - 1)."""
    a = np.frombuffer(buf, np.uint8)
    try:
        n_stream, N = a[8:16].view(np.uint32)
        meta = a[16:16 + 12 * N].view(np.int32).reshape(N, 3)
        off = 16 + 12 * N
        v_trans, n_layer = a[off:off + 8].view(np.uint32)
        off += 8
        out = []
        for which in ("k", "v"):
            layers = []
            for _ in range(n_layer):
                kind = int(a[off:off + 4].view(np.int32)[0])
                if which == "v" and v_trans:
                    size, width = a[off + 4:off + 12].view(np.uint32)
                    off += 12
                    layers.append(a[off:off + N * width * 2].view(np.float16).reshape(width, N).T)
                else:
                    row = int(a[off + 4:off + 12].view(np.uint64)[0])
                    off += 12
                    layers.append(a[off:off + N * row].view(np.float16).reshape(N, row // 2))
                    size = 2
                if kind != _F16 or size != 2:
                    raise ValueError(f"cache rows of ggml type {kind}, element size {size}: only float16 is written")
                off += layers[-1].nbytes
            out.append(np.stack(layers))
    except (IndexError, ValueError) as e:
        raise ValueError(f"not a one-sequence llama.cpp state this module can write: {e}") from None
    if n_stream != 1 or off != a.size or not (meta == np.stack([np.arange(N), np.ones(N), np.zeros(N)], 1)).all():
        raise ValueError("not a one-sequence llama.cpp state of cells at positions 0 .. N - 1")
    return bytes(a[:8]), out[0], out[1], bool(v_trans)


def check_state_format(prefill: TorchPrefill, ctx, decode_seq0, ids: list[int]) -> tuple[bytes, bool]:
    """Have llama.cpp prefill ``ids`` (``decode_seq0(ids, 0)``) into ``ctx``'s cleared cache; demand that its
    state reads and writes back byte for byte and that `TorchPrefill.kv` of ``ids`` agrees with its keys and
    values (within 5% of their largest magnitude, layer by layer). Returns (tag, v_trans) for `TorchPrefill.fill`;
    ValueError otherwise. The cache is left holding ``ids``."""
    decode_seq0(ids, 0)
    try:
        raw = seq_state_get(ctx)
    except RuntimeError as e:
        raise ValueError(str(e)) from None
    tag, k, v, v_trans = read_state(raw)
    if write_state(tag, k, v, v_trans).tobytes() != raw:
        raise ValueError("llama.cpp's sequence state is not in the layout torch prefill writes")
    tk, tv = prefill.kv(ids)
    for name, ours, theirs in (("keys", tk.float(), k), ("values", tv.float(), v)):
        theirs = torch.from_numpy(theirs.astype(np.float32))
        if ours.shape != theirs.shape:
            raise ValueError(f"torch prefill's {name} have shape {tuple(ours.shape)}, llama.cpp's {tuple(theirs.shape)}")
        err = ((ours - theirs).abs().amax((1, 2)) / theirs.abs().amax((1, 2)).clamp_min(1e-6)).max().item()
        if err > 0.05:
            raise ValueError(f"torch prefill's {name} differ from llama.cpp's by {err:.0%} of their scale")
    return tag, v_trans
