"""A lean forward pass for Llama-family models over a static KV cache (the torch backend's fast path).

On 2 CPU cores a bfloat16 step of SmolLM2-135M through ``transformers`` takes ~21 ms, of which the
matrix products need ~11 ms (270 MB of weights at ~24 GB/s); the rest is per-op Python dispatch
over 30 layers (module hooks, cache bookkeeping, mask preparation). gpt-fast's recipe removes most
of it without compiling anything: fused QKV and gate-up weights (two matmuls per layer fewer), a
KV cache preallocated once and written in place, RoPE tables computed once, and one
``scaled_dot_product_attention`` per layer with the tree mask given as booleans. On a CPU the
weights are also packed once into oneDNN's blocked layout (`PackedLinear`): in bfloat16 ~12 ms a step
instead of ~15, the same numbers; in float32 (a CPU without native bfloat16) the LM head's product
about twice as fast as MKL's.

The arithmetic is the Hugging Face Llama's (`LlamaRMSNorm` in float32, RoPE with the model's own
`rotary_emb` tables, SiLU gate, tied or untied head), so logits agree with ``transformers`` to
rounding (tested on random-init models, chains and trees). The weights are shared with the HF
model where they are not fused.

Cache rows: a pass of T tokens writes rows ``start .. start + T - 1`` whatever their positions
(tree nodes share depths); ``keep_rows`` gathers the accepted ones into place, as for the
``DynamicCache`` path (``torch_cache.py``).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from . import skinny

__all__ = ["FEW", "LeanLlama", "PackedLinear", "attend", "check_taps", "cpu_bf16", "hidden_features", "rms", "rope",
           "signed_sin", "supports", "tap_features"]


def cpu_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively through oneDNN (AVX512-BF16 / AMX): where it does not, bfloat16
    is emulated and slower than float32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def supports(model) -> bool:
    """Whether ``model`` is a plain Llama this forward reproduces (no biases, default RoPE, SiLU)."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) != "llama":
        return False
    rope = getattr(cfg, "rope_parameters", None) or {}
    return (not getattr(cfg, "attention_bias", False) and not getattr(cfg, "mlp_bias", False)
            and rope.get("rope_type", "default") == "default" and getattr(cfg, "hidden_act", "silu") == "silu"
            and getattr(cfg, "pretraining_tp", 1) == 1)


def attend(q: torch.Tensor, kt: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
           blocked: tuple[int, torch.Tensor] | None = None, causal: bool = False, valid: int | None = None
           ) -> torch.Tensor:
    """Attention of q [1, H, T, D] over keys kt [1, H_kv, D, S] (stored transposed) and values v [1, H_kv, S, D]
    (H a multiple of H_kv, transformers' repeat_kv order); mask BoolTensor [T, S] (True = attend) or None (every
    row); blocked: `blocked_rows(mask, H // H_kv)` if the caller has it (once a forward, not once a layer);
    causal: q's rows are the last T of the S, each seeing every column up to its own (mask is ignored).
    valid: for a few rows (T <= 16, not causal), only the first `valid` columns are keys (mask is [T, valid]);
    the rest pad S to a multiple of `PAD` (`padded`) and must hold finite values, which no row sees.

    A few decode / draft rows (T <= 16) take two batched matmuls per KV head group and a softmax, in the tensors'
    dtype as transformers' eager attention (on 2 CPU cores ~40 us at S = 200, against ~90 us for the fused
    kernel's setup, ~700 us at S = 1500 with a mask). A causal prefill of more than `CAUSAL_BLOCK` rows takes the
    same arithmetic in blocks of that many query rows, each against the columns up to its own last row only
    (bfloat16, 2 cores: 3.5 against 5.8 ms a layer for ``scaled_dot_product_attention``'s own causal kernel at
    T = S = 600, 8.6 against 12.3 at 1000), and the same at any offset (a prefill after a kept part), where the
    fused kernel needs a boolean mask and computes every block. Other passes (T > 16) take the fused kernel:
    ``causal`` with T = S up to `CAUSAL_BLOCK` its own causal mask (cheaper than the blocks' setup: 130 against
    200 us at T = 64; so is a boolean mask for a short prefill at an offset, which `LeanLlama.forward` builds).

    Why keys transposed: a cache holds more rows than it has filled, so its first S rows are a strided view, and
    a bfloat16 batched matmul against the transpose of such a [S, D] view is 3-4x slower than against a slice
    of the columns of a [D, rows] buffer (at S = 1500, 3 heads: ~104 against ~34 us; the same numbers out).

    Why padded: oneDNN, behind torch's bfloat16 products on a CPU, builds (JIT-compiles) and caches a kernel for
    every new shape, and a decoding step's key count is new at every step: ~1 ms and ~1.3 MB a step that the cache
    keeps (up to its 1,024 kernels; a plain torch loop grew by ~500 MB over 13 requests). Columns padded to a
    multiple of `PAD` repeat shapes; the padding's scores are -inf, so its probabilities are 0 (the products may
    round apart from unpadded ones in the last place: a different blocking of the same sum).

    Two cheaper steps than the textbook order, same rounding: q is scaled before the product (for D = 64 the
    scale is 1/8, a power of two, so the scores are the same bits; a [G T, D] product instead of a [G T, S] one),
    and a bfloat16 softmax runs torch's float32 kernel and rounds once, as ``softmax(dtype=float32).to(bf16)``
    does, in one op instead of two (2-4x faster at 11 rows; 6 of 368k probabilities differed by one unit in the
    last place in a trial, with the same largest error against float64)."""
    H, Hk, T, D = q.shape[1], kt.shape[1], q.shape[2], q.shape[3]
    G = H // Hk  # query heads per KV head
    if causal and (T > CAUSAL_BLOCK or T != kt.shape[3]):
        return _attend_causal(q, kt, v)
    if T > MATMUL_ROWS:
        k = kt.transpose(-1, -2).contiguous()  # the fused kernel wants rows of keys (a strided view: 2.5x slower)
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=H != Hk, is_causal=causal,
                                              attn_mask=None if mask is None or causal else mask[None, None])
    scores = torch.matmul(q.reshape(Hk, G * T, D) * D ** -0.5, kt[0])  # [Hk, G T, S]; q scaled: a smaller product
    S = kt.shape[3] if valid is None else valid
    if S < kt.shape[3]:
        scores[..., S:].fill_(float("-inf"))  # the padding
    if mask is not None:
        first, tail = blocked_rows(mask, G) if blocked is None else blocked
        scores[..., first:S].masked_fill_(tail, float("-inf"))
    probs = torch.softmax(scores, -1)  # in the scores' dtype, computed in float32 inside (see above)
    return torch.matmul(probs, v[0]).view(1, H, T, D)


MATMUL_ROWS = 16  # passes of at most this many rows attend by `attend`'s own matmuls, over padded keys
CAUSAL_BLOCK = 128  # query rows per block of a causal prefill (64: 4.0, 128: 3.5, 256: 3.6 ms a layer at T = 600)
PAD = 64  # a few rows' key columns are padded to a multiple of this (`attend`'s valid)


def padded(end: int, rows: int, dtype: torch.dtype, device: torch.device) -> int:
    """Key columns for `attend` over `end` keys in a cache of `rows`: `end` rounded up to a multiple of `PAD` (at
    most `rows`) where the products go through oneDNN (a reduced-precision CPU tensor), else `end`."""
    if dtype == torch.float32 or device.type != "cpu":
        return end
    return min(rows, -(-end // PAD) * PAD)


def _attend_causal(q: torch.Tensor, kt: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`attend` for causal rows, the last T of S: q [1, H, T, D], kt [1, H_kv, D, S], v [1, H_kv, S, D]."""
    H, Hk, T, D = q.shape[1], kt.shape[1], q.shape[2], q.shape[3]
    G, S = H // Hk, kt.shape[3]
    qs = q.reshape(Hk, G, T, D) * D ** -0.5
    out = torch.empty(Hk, G, T, D, dtype=q.dtype, device=q.device)
    for s in range(0, T, CAUSAL_BLOCK):
        e = min(T, s + CAUSAL_BLOCK)
        cols = S - T + e  # the block's last row sees columns 0 .. cols - 1
        scores = torch.matmul(qs[:, :, s:e].reshape(Hk, G * (e - s), D), kt[0, ..., :cols])  # [Hk, G n, cols]
        scores[..., cols - (e - s):].masked_fill_(_ahead(e - s, G, q.device), float("-inf"))  # the block's square
        out[:, :, s:e] = torch.matmul(torch.softmax(scores, -1), v[0, :, :cols]).view(Hk, G, e - s, D)
    return out.view(1, H, T, D)


@functools.lru_cache(maxsize=8)
def _ahead(n: int, G: int, device: torch.device) -> torch.Tensor:
    """BoolTensor [G n, n]: row i of each of G query heads may not see column j > i of its block's own square (the
    same for every layer and every full block: built once, not per layer)."""
    i = torch.arange(n, device=device)
    return (i[None, :] > i[:, None]).repeat(G, 1)


def blocked_rows(mask: torch.Tensor, G: int) -> tuple[int, torch.Tensor]:
    """(c, ~mask[:, c:] repeated for the G query heads of a KV group: [G T, S - c]), c the first column some row
    may not see: `attend` masks only its scores' columns from c on (a tree pass's rows all see the committed
    cache, so c is where the pass's own rows start, and the fill no longer grows with the context)."""
    hidden = ~mask
    cols = hidden.any(0).nonzero()
    first = int(cols[0, 0]) if cols.numel() else mask.shape[1]
    return first, hidden[:, first:].repeat(G, 1)


def rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm: normalised in float32, rounded to x's dtype, then scaled (torch's kernel computes in float32
    for bfloat16 inputs: the same numbers as upcasting first, in one op instead of five). The target's and the
    draft head's."""
    return weight * F.rms_norm(x, x.shape[-1:], eps=eps)


def signed_sin(sin: torch.Tensor) -> torch.Tensor:
    """[-sin_1 | sin_2] of a RoPE sin table [..., D] with halves sin_1, sin_2: with it rotate_half(x) sin is
    roll(x, D / 2) [-sin_1 | sin_2], no negation and no cat a call (`rope`)."""
    half = sin.shape[-1] // 2
    return torch.cat((-sin[..., :half], sin[..., half:]), -1)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """HF's x cos + rotate_half(x) sin with `sin` as `signed_sin` makes it (the same numbers); x [..., T, D],
    cos and sin broadcast to it ([T, D])."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * sin


def tap_features(final: torch.Tensor, tapped: list[torch.Tensor], eps: float) -> torch.Tensor:
    """[final | rms(t_1) | ... ]: a draft head's input features [T, C (1 + n)] from the final normed hidden
    state [T, C] and the residual streams [T, C] of the tapped layers, each scaled to unit RMS (their
    norms grow with depth; EAGLE-3, arXiv 2503.01840, fuses low, middle and high features)."""
    return torch.cat([final] + [F.rms_norm(t, t.shape[-1:], eps=eps).to(final.dtype) for t in tapped], -1)


def hidden_features(hidden_states, taps: tuple[int, ...], eps: float) -> torch.Tensor:
    """`tap_features` [T, C (1 + len(taps))] of a transformers forward's ``hidden_states`` (batch row 0): the
    last, normed state, then the stream after each tapped layer (``hidden_states[t]``)."""
    return tap_features(hidden_states[-1][0], [hidden_states[t][0] for t in taps], eps)


def check_taps(taps, layers: int, what: str = "feature taps") -> tuple[int, ...]:
    """`taps` ascending without repeats; ValueError unless each is a layer 1 .. layers - 1 (one whose output is
    not the last)."""
    if any(not 0 < int(t) < layers for t in taps):
        raise ValueError(f"{what} must name layers 1 .. {layers - 1}, got {tuple(taps)}")
    return tuple(sorted({int(t) for t in taps}))


FEW = 4  # float32 passes of at most this many rows take `PackedLinear._few`


class PackedLinear:
    """x [..., in] -> ``F.linear(x, w)`` [..., out], reading `w` in oneDNN's own blocked layout, reordered once
    here, for a bfloat16 or float32 weight on a CPU; ``packed`` says whether it is. Other dtypes and devices,
    ``pack=False``, or a torch without the op: plain ``F.linear``.

    Why, in bfloat16 (a CPU with AVX512-BF16 / AMX): ``F.linear`` also computes through oneDNN, but hands it the
    plain row-major weight on every call. With the weight packed once, a step of SmolLM2-135M on 2 CPU cores
    takes ~12 ms instead of ~15 (the LM head's 49152 x 576 product: 0.84 against 1.70 ms), and a 7-row pass 14.7
    against 18.5 ms; the outputs are identical, bit for bit (`tests/backends/test_torch_lean.py`).

    In float32 (where bfloat16 is emulated, an AVX2 CPU) ``F.linear`` goes to MKL's sgemm; oneDNN's packed kernel
    streams the weight about twice as fast past one row: the LM head's product 8.4 against 16.8 ms for one row,
    17.6 against 38.3 for eight (2 cores of an AMD EPYC without AVX-512, docs/speed.md §23). Its sums round in
    another order (within float32 rounding of sgemm's, which also rounds one row apart from several, as oneDNN
    does). Passes of at most `skinny.ROWS` rows skip it for verispec's own AVX2 kernel (`skinny.py`) where that
    builds, else passes of at most `FEW` rows for MKL's sgemm (`_few`): both are faster there. The packed copy
    doubles the weights' memory. ``small=False`` keeps every packed pass on the packed kernel (a caller that drops
    ``weight`` to save memory: the faster paths for a few rows read it)."""

    def __init__(self, w: torch.Tensor, pack: bool = True, small: bool = True):
        self.weight, self._packed = w, None
        if pack and w.dtype in (torch.bfloat16, torch.float32) and w.device.type == "cpu" and w.dim() == 2:
            try:
                self._packed = torch.ops.mkldnn._reorder_linear_weight(w, 1)
            except (AttributeError, RuntimeError):  # no oneDNN in this build, or no kernel for this dtype here
                pass
        self.few = small and self._packed is not None and w.dtype == torch.float32  # passes of <= FEW rows: `_few`
        # passes of <= skinny.ROWS rows: the AVX2 kernel where it builds (it streams the weight fastest), from
        # a bfloat16 copy where the weight holds bfloat16 values
        self._skinny = skinny.kernel_weight(w) if self.few else None

    @property
    def packed(self) -> bool:
        return self._packed is not None

    @property
    def skinny(self) -> bool:
        """Whether passes of up to `skinny.ROWS` rows take verispec's AVX2 kernel."""
        return self._skinny is not None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._packed is None:
            return F.linear(x, self.weight)
        if self.skinny and x.numel() <= skinny.ROWS * x.shape[-1]:
            return skinny.linear(x, self._skinny)
        if self.few and x.numel() <= FEW * x.shape[-1]:
            return self._few(x)
        return torch.ops.mkldnn._linear_pointwise(x, self._packed, None, "none", [None], "")

    def _few(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in] of n <= FEW rows, float32: the product as ``w @ x.T`` over x padded with zero rows to FEW.

        MKL's sgemm streams a [out, in] weight times FEW columns as fast as oneDNN's packed kernel does one row
        (the model's products: 45 against 48 ms a step), where the packed kernel takes ~1.7x as long for 2-4
        rows (2 cores of an AMD EPYC without AVX-512, docs/speed.md §24): a pass verifying a draft of up to
        FEW - 1 tokens then costs about one plain step. Padding every such pass to FEW columns also gives each
        row the same bits whatever n is: a plain step's products and a short verification pass's agree (their
        attention, masked or not, may still round apart)."""
        rows = x.reshape(-1, x.shape[-1])
        n = rows.shape[0]
        if n < FEW:
            rows = F.pad(rows, (0, 0, 0, FEW - n))
        # contiguous: a transposed [FEW, out] would lead every elementwise op after it to keep that layout (a
        # 4-row pass then cost 1.2 steps instead of 1.05)
        return torch.mm(self.weight, rows.t())[:, :n].t().contiguous().reshape(*x.shape[:-1], -1)


def _fuse(*linears) -> torch.Tensor:
    """One weight [sum of out, in] for several bias-free linears on the same input; each module's
    weight becomes a view into it, so the model keeps working and no memory is duplicated."""
    fused = torch.cat([lin.weight for lin in linears])
    start = 0
    for lin in linears:
        rows = lin.weight.shape[0]
        lin.weight.data = fused[start:start + rows]
        start += rows
    return fused


class LeanLlama:
    """Forward passes of a ``LlamaForCausalLM`` over its own static KV cache of ``n_ctx`` rows.

    Args:
        model: the loaded ``LlamaForCausalLM`` (eval mode; `supports(model)` must hold).
        n_ctx: cache rows (the backend's context limit).
        pack: multiply by weights packed for oneDNN where that applies (`PackedLinear`: bfloat16 on a CPU;
            the same numbers, ~1.25x faster steps, twice the weights' memory).
    """

    def __init__(self, model, n_ctx: int, pack: bool = True):
        if not supports(model):
            raise ValueError("LeanLlama needs a LlamaForCausalLM without biases, default RoPE and SiLU")
        cfg, inner = model.config, model.model
        w = inner.embed_tokens.weight
        self.dtype, self.device = w.dtype, w.device
        self.n_heads, self.n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        self.embed, self.norm = w, inner.norm.weight
        self.head = PackedLinear(model.lm_head.weight, pack)  # h [T, C] -> logits [T, V]
        self.packed = self.head.packed  # every product is packed, or none (one dtype, one device)
        self.layers = []
        with torch.no_grad():
            for layer in inner.layers:
                a, m = layer.self_attn, layer.mlp
                wqkv = _fuse(a.q_proj, a.k_proj, a.v_proj)  # [(H + 2 H_kv) D, C]
                wgu = _fuse(m.gate_proj, m.up_proj)  # [2 I, C]
                self.layers.append((layer.input_layernorm.weight, PackedLinear(wqkv, pack),
                                    PackedLinear(a.o_proj.weight, pack), layer.post_attention_layernorm.weight,
                                    PackedLinear(wgu, pack), PackedLinear(m.down_proj.weight, pack)))
            pos = torch.arange(n_ctx, device=self.device)[None]
            cos, sin = inner.rotary_emb(w[:1], pos)  # [1, n_ctx, D] in the model dtype, as HF computes them
        self.cos, self.sin = cos[0], signed_sin(sin[0])  # [n_ctx, D], sin signed for `rope`
        self.n_ctx = n_ctx
        self.k = self.v = torch.zeros(0)  # k [L, 1, H_kv, D, rows] (transposed, see `attend`), v [L, 1, H_kv, rows, D]
        self._grow(min(n_ctx, 1024))  # grown by doubling: a 128k-context model does not take 128k rows up front

    def _grow(self, rows: int) -> None:
        """Reallocate the cache with `rows` rows, keeping what it holds."""
        L, Hk, D = len(self.layers), self.n_kv, self.head_dim
        k = torch.zeros(L, 1, Hk, D, rows, dtype=self.dtype, device=self.device)  # keys transposed
        v = torch.zeros(L, 1, Hk, rows, D, dtype=self.dtype, device=self.device)
        held = min(self.rows, rows) if self.k.dim() == 5 else 0
        if held:
            k[..., :held], v[:, :, :, :held] = self.k[..., :held], self.v[:, :, :, :held]
        self.k, self.v = k, v
        self._kv = list(zip(k, v))  # layer i's k [1, H_kv, D, rows], v [1, H_kv, rows, D] (views)

    @property
    def rows(self) -> int:
        """Cache rows allocated (grown by doubling up to n_ctx)."""
        return self.v.shape[3] if self.v.dim() == 5 else 0

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, pos: torch.Tensor, start: int, mask: torch.Tensor | None,
                last_only: bool = False, hidden: bool = False, taps: tuple[int, ...] = ()):
        """Logits for T tokens written to cache rows start .. start + T - 1.

        ids, pos: LongTensor [T]; mask: BoolTensor [T, start + T] (True = attend) or None, meaning
        causal over rows (every earlier row and itself). Returns logits [T, V] (the last row only when
        last_only), and with ``hidden`` also the final normed hidden states [T, C] (all rows), followed
        along the last axis by the residual stream after layer t (counted from 1) for each t of `taps`
        (ascending), RMS-normalised without weight (`tap_features`): [T, C (1 + len(taps))].
        """
        T = ids.shape[0]
        end = start + T
        if end > self.n_ctx:
            raise ValueError(f"{end} cache rows needed, the context holds {self.n_ctx}")
        if end > self.rows:
            self._grow(min(self.n_ctx, max(end, 2 * self.rows)))
        # a causal prefill: in blocks past CAUSAL_BLOCK rows, else the fused kernel's own mask from row 0 (`attend`)
        causal = mask is None and (T > CAUSAL_BLOCK or (start == 0 and T > MATMUL_ROWS))
        if mask is None and T > 1 and not causal:
            rows = torch.arange(end, device=self.device)
            mask = rows[None, :] <= rows[start:, None]  # [T, end]
        H, Hk, D = self.n_heads, self.n_kv, self.head_dim
        cos, sin = self.cos[pos][None, None], self.sin[pos][None, None]  # [1, 1, T, D]
        blocked = None if mask is None or T > MATMUL_ROWS else blocked_rows(mask, H // Hk)  # once for all layers
        cols = end if causal or T > MATMUL_ROWS else padded(end, self.rows, self.dtype, self.device)  # keys to pad
        x = F.embedding(ids, self.embed)[None]  # [1, T, C]
        tapped = []
        for i, ((ln1, wqkv, wo, ln2, wgu, wdown), (kc, vc)) in enumerate(zip(self.layers, self._kv)):
            qkv = wqkv(rms(x, ln1, self.eps))  # [1, T, (H + 2 Hk) D]
            qk = rope(qkv[..., :(H + Hk) * D].view(1, T, H + Hk, D).transpose(1, 2), cos, sin)  # q and k heads
            kc[..., start:end] = qk[:, H:].transpose(2, 3)
            vc[:, :, start:end] = qkv[..., (H + Hk) * D:].view(1, T, Hk, D).transpose(1, 2)
            o = attend(qk[:, :H], kc[..., :cols], vc[:, :, :cols], mask, blocked, causal, end)  # [1, H, T, D]
            x = x + wo(o.transpose(1, 2).reshape(1, T, H * D))
            gate, up = wgu(rms(x, ln2, self.eps)).chunk(2, -1)
            x = x + wdown(F.silu(gate) * up)
            if hidden and i + 1 in taps:
                tapped.append(x[0])
        h = rms(x[0, -1:] if last_only and not hidden else x[0], self.norm, self.eps)  # [T or 1, C]
        logits = self.head(h[-1:] if last_only else h)
        if hidden and taps:
            return logits, tap_features(h, tapped, self.eps)
        return (logits, h) if hidden else logits

    def keep_rows(self, start: int, rows: torch.Tensor) -> None:
        """Move cache rows ``rows`` (LongTensor [K], ascending, >= start) to start .. start + K - 1."""
        if rows.numel() and not bool((rows == torch.arange(start, start + rows.numel())).all()):
            end = start + rows.numel()
            self.k[..., start:end] = self.k.index_select(4, rows)
            self.v[:, :, :, start:end] = self.v.index_select(3, rows)
