"""A feature-level draft head (EAGLE-1, Li et al. 2024, arXiv 2401.15077, Fig. 6 and §3.1).

The target's final hidden state f_i carries what it knows at position i. EAGLE drafts in that
space: one decoder layer reads (embedding of token x_i, feature f_{i-1}) and predicts f_i; the
target's own LM head turns the prediction into next-token logits. Chained, the predicted f̂
stands in for the feature the target has not computed yet:

    f̂_P = head(e(x_P), f_{P-1})          x̂_{P+1} = argmax W f̂_P      (real features up to P - 1)
    f̂_{P+1} = head(e(x̂_{P+1}), f̂_P)    x̂_{P+2} = argmax W f̂_{P+1}  ...

The head attends over its own key / value rows of the context (computed from real features)
and of the chain so far. Its logits cover a reduced draft vocabulary (the tokens the target
emits most, as in FR-Spec / EAGLE-3): the LM head rows it reads are 1/6 of the target's. The
q it reports is zero outside that vocabulary, and any q is lossless for the verifier.

The embedding and LM head are the target's (frozen, attached with `attach`, never saved); the
head's own weights are ~4M parameters. Shapes: H hidden size, nh heads of D dims, Vd draft vocab.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..backends.torch_llama import PackedLinear, rms, rope, signed_sin

__all__ = ["DraftHead", "FloatLinear", "Int4Linear", "Int8Linear", "attention", "drafting_copy", "load_head",
           "quantize_linear", "save_head", "with_taps"]


class DraftHead(nn.Module):
    """fc([e(x_i); f_{i-1}]) -> one pre-norm decoder layer (RoPE attention, SiLU MLP) -> f̂_i.

    Args:
        hidden: the target's hidden size H.
        heads: attention heads (H must divide by it).
        intermediate: MLP width.
        vocab: LongTensor [Vd], the target token id of each draft-vocabulary entry.
        rope_theta: RoPE base (the target's).
        taps: target layers whose residual streams the head also reads (EAGLE-3, arXiv 2503.01840, fuses
            low, middle and high layers). Real feature rows are then [f | rms(h_t) ...], [.., H (1 + len(taps))]
            as `TorchBackend.record_features(taps=...)` keeps them, and enter as f + mix([rms(h_t) ...]); the
            head's own predictions f̂ (width H) enter as they are. `mix` starts at zero: until trained, the
            head computes what it computes without taps.
    """

    def __init__(self, hidden: int, heads: int, intermediate: int, vocab: torch.Tensor,
                 rope_theta: float = 10000.0, eps: float = 1e-5, taps: tuple[int, ...] = ()):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} does not divide into {heads} heads")
        self.taps = tuple(sorted({int(t) for t in taps}))
        self.config = {"hidden": hidden, "heads": heads, "intermediate": intermediate,
                       "rope_theta": float(rope_theta), "eps": eps, "taps": list(self.taps)}
        self.nh, self.d, self.eps = heads, hidden // heads, eps
        self.fc = nn.Linear(2 * hidden, hidden)
        self.mix = nn.Linear(len(self.taps) * hidden, hidden, bias=False) if self.taps else None
        if self.mix is not None:
            nn.init.zeros_(self.mix.weight)
        self.ln1 = nn.Parameter(torch.ones(hidden))
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=False)
        self.o = nn.Linear(hidden, hidden, bias=False)
        self.ln2 = nn.Parameter(torch.ones(hidden))
        self.gate_up = nn.Linear(hidden, 2 * intermediate, bias=False)
        self.down = nn.Linear(intermediate, hidden, bias=False)
        for out in (self.o, self.down):  # the layer starts as the identity on fc's output (GPT-2's residual init)
            nn.init.zeros_(out.weight)
        self.register_buffer("vocab", torch.as_tensor(vocab, dtype=torch.long))
        inv = 1.0 / rope_theta ** (torch.arange(0, self.d, 2, dtype=torch.float32) / self.d)
        self.register_buffer("inv_freq", inv, persistent=False)
        self.embed = self.lm_head = None  # the target's, frozen: see attach
        self.quant = 0  # bits of the quantized weights (`drafting_copy`: 4 or 8); 0 = float
        self.drafting = False  # a `drafting_copy`: its linears (and the LM head rows `attach` gives it) are modules
        self._tables = None  # RoPE's cos and signed sin by position (`_rope_tables`)

    def attach(self, embed: torch.Tensor, lm_head: torch.Tensor) -> DraftHead:
        """Use the target's embedding [V, H] and LM head weight [V, H] (the draft-vocab rows of it)."""
        if embed.shape[1] != self.fc.in_features // 2 or lm_head.shape[1] != self.fc.in_features // 2:
            raise ValueError(f"the head expects hidden size {self.fc.in_features // 2}, the target has "
                             f"{embed.shape[1]}")
        if int(self.vocab.max()) >= lm_head.shape[0]:
            raise ValueError("the head's draft vocabulary holds ids beyond the target's vocabulary")
        self.embed = embed.detach()
        rows = lm_head.detach()[self.vocab.to(lm_head.device)]  # [Vd, H]
        self.lm_head = quantize_linear(rows, self.ln1.dtype, None, self.quant) if self.drafting else rows
        return self

    # ------------------------------------------------------------------ pieces
    def _rope_tables(self, pos: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and signed sin [T, D] of positions pos [T] in dtype, rows of tables built once and grown by doubling
        (the numbers computing them per call gives; ~90 us less a projection, 20-40 us a draft step, docs/speed.md §20).
        The sin table is signed for `torch_llama.rope`, as the target's own (`signed_sin`)."""
        n = int(pos.max()) + 1 if pos.numel() else 1
        tab = self._tables
        if tab is None or tab[0].shape[0] < n or tab[0].dtype != dtype or tab[0].device != pos.device:
            rows = max(n, 2 * tab[0].shape[0] if tab is not None and tab[0].dtype == dtype else 1024)
            ang = torch.arange(rows, device=pos.device).float()[:, None] * self.inv_freq.to(pos.device)[None]
            cos, sin = (torch.cat((t, t), -1).to(dtype) for t in (ang.cos(), ang.sin()))  # [rows, D]
            self._tables = tab = (cos, signed_sin(sin))
        return tab[0][pos], tab[1][pos]  # copies of the rows: tables built while drafting serve training too

    def inputs(self, tokens: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """fc([e(x_i); f_{i-1}]): tokens [..., T], feats [..., T, H] (already shifted; real rows with taps
        [..., T, H (1 + taps)]) -> [..., T, H]."""
        H = self.fc.out_features
        if feats.shape[-1] != H:
            if self.mix is None or feats.shape[-1] != H * (1 + len(self.taps)):
                raise ValueError(f"the head reads features of width {H}"
                                 f"{f' or {H * (1 + len(self.taps))}' if self.mix is not None else ''}, "
                                 f"got {feats.shape[-1]}")
            feats = feats[..., :H] + self.mix(feats[..., H:])
        e = F.embedding(tokens, self.embed).to(feats.dtype)
        return self.fc(torch.cat((e, feats), -1))

    def project(self, x: torch.Tensor, pos: torch.Tensor):
        """q, k, v [B, nh, T, D] (RoPE applied) of the layer inputs x [B, T, H]."""
        B, T, _ = x.shape
        qkv = self.qkv(rms(x, self.ln1, self.eps)).view(B, T, 3, self.nh, self.d)
        cos, sin = self._rope_tables(pos, x.dtype)  # [T, D]
        q, k = rope(qkv[:, :, :2].permute(2, 0, 3, 1, 4), cos, sin)  # q and k rotated together: [2, B, nh, T, D]
        return q, k, qkv[:, :, 2].transpose(1, 2)

    def finish(self, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """Residual + output projection of attention o [B, nh, T, D], then the MLP: f̂ [B, T, H]."""
        B, _, T, _ = o.shape
        x = x + self.o(o.transpose(1, 2).reshape(B, T, -1))
        gate, up = self.gate_up(rms(x, self.ln2, self.eps)).chunk(2, -1)
        return x + self.down(F.silu(gate) * up)

    def logits(self, f: torch.Tensor) -> torch.Tensor:
        """Draft-vocabulary logits [..., Vd] of predicted features f [..., H]."""
        if self.drafting:
            return self.lm_head(f.to(self.ln1.dtype))
        return F.linear(f.to(self.lm_head.dtype), self.lm_head)


class HeadCache:
    """The head's key / value rows for one sequence, with in-place append and truncation."""

    def __init__(self, head: DraftHead, rows: int = 1024, dtype=torch.float32):
        self.head, self.len = head, 0
        self.k = torch.zeros(head.nh, rows, head.d, dtype=dtype)
        self.v = torch.zeros_like(self.k)

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor, feats: torch.Tensor, pos: torch.Tensor,
             mask: torch.Tensor | None = None, last_only: bool = False) -> torch.Tensor:
        """Append T rows (tokens [T], input features [T, H], positions [T]) and return f̂ [T, H]. The rows
        attend to all rows before them and causally among themselves, or as `mask` [T, len + T] says.
        last_only: f̂ of the last row alone ([1, H]; it sees every row, `mask` is ignored): the rows before it
        only write their keys and values, all a catch-up on committed tokens needs of them (their attention and
        MLP are skipped: half a prompt's products, and its attention's whole square)."""
        hd, T = self.head, tokens.shape[0]
        end = self.len + T
        if end > self.k.shape[1]:
            grow = max(end, 2 * self.k.shape[1])
            self.k = torch.cat((self.k, self.k.new_zeros(hd.nh, grow - self.k.shape[1], hd.d)), 1)
            self.v = torch.cat((self.v, self.v.new_zeros(hd.nh, grow - self.v.shape[1], hd.d)), 1)
        x = hd.inputs(tokens, feats.to(self.k.dtype))[None]  # [1, T, H]
        q, k, v = hd.project(x, pos)
        self.k[:, self.len:end], self.v[:, self.len:end] = k[0], v[0]
        if last_only:
            x, q, mask = x[:, -1:], q[:, :, -1:], None
        elif mask is None and T > 1:
            rows = torch.arange(end)
            mask = rows[None, :] <= rows[self.len:, None]  # [T, end]
        o = attention(q, self.k[None, :, :end], self.v[None, :, :end], mask)
        self.len = end
        return hd.finish(x, o)[0]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``scaled_dot_product_attention`` of q [1, nh, T, D] over k, v [1, nh, S, D]; mask [T, S] or None. A lone
    bfloat16 query row goes in twice: torch's CPU flash kernel takes ~2x longer for one such row than for two (9
    heads of 64, 2 cores: 241 against 135 us at S = 400, 581 against 311 at 1,000), and a row's output does not
    depend on the rows beside it. A float32 row goes in alone, 2-4x faster than twice (docs/speed.md §29)."""
    if q.shape[2] == 1 and q.dtype == torch.bfloat16:
        q2 = q.expand(-1, -1, 2, -1)
        return F.scaled_dot_product_attention(q2, k, v, attn_mask=None if mask is None else mask.expand(2, -1))[:, :, :1]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def with_taps(head: DraftHead, taps: tuple[int, ...]) -> DraftHead:
    """A copy of `head` that also reads the target layers `taps` (its `mix` at zero: the same predictions
    until trained), to train a head with taps from one without; `head` itself if it has them already or no
    taps are asked for (a head with taps is trained further with them)."""
    taps = tuple(sorted({int(t) for t in taps}))
    if not taps or taps == head.taps:
        return head
    if head.taps:
        raise ValueError(f"this head reads layers {head.taps} already; it cannot switch to {taps}")
    return _copy(head, taps)


def _copy(head: DraftHead, taps: tuple[int, ...]) -> DraftHead:
    """A new head of `head`'s config with its weights (and `taps`; new ones read through a `mix` at zero)."""
    if head.drafting:
        raise ValueError("a drafting copy of a head is for drafting; copy or train the head it was made from")
    cfg = head.config
    new = DraftHead(cfg["hidden"], cfg["heads"], cfg["intermediate"], head.vocab, cfg["rope_theta"], cfg["eps"], taps)
    new.load_state_dict(head.state_dict(), strict=taps == head.taps)
    return new.to(head.fc.weight.dtype)


class _WeightOnlyLinear(nn.Module):
    """x W^T (+ b) through a kernel for W stored its own way (quantized, or packed): a subclass stores W and
    multiplies rows [M, K] by it in `_product`; inputs and outputs are in `dtype`, bias [N] or None."""

    def __init__(self, weight: torch.Tensor, dtype: torch.dtype, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("bias", None if bias is None else bias.detach().to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., K] -> [..., N]
        y = self._product(x.reshape(-1, self.in_features).contiguous()).view(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


class Int8Linear(_WeightOnlyLinear):
    """x W^T (+ b) with W stored as int8 rows, one scale per row (symmetric, weight-only; as gpt-fast's int8
    mode). On 2 CPU cores torch's int8 kernel for 1-3 rows is 1.5-4x faster than its bfloat16 one on the head's
    shapes, and reads half the bytes (the target's pass evicts the head's weights from the cache each step;
    docs/speed.md §10).

    weight [N, K] float; bias [N] or None; dtype: that of the inputs and outputs."""

    def __init__(self, weight: torch.Tensor, dtype: torch.dtype, bias: torch.Tensor | None = None):
        super().__init__(weight, dtype, bias)
        w = weight.detach().float()
        scale = w.abs().amax(1).clamp_min(1e-12) / 127  # [N]
        self.register_buffer("weight", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))  # [N, K]
        self.register_buffer("scale", scale.to(dtype))

    def _product(self, x: torch.Tensor) -> torch.Tensor:
        return torch._weight_int8pack_mm(x, self.weight, self.scale)


class Int4Linear(_WeightOnlyLinear):
    """x W^T (+ b) with W stored as 4-bit integers in groups of 32 along a row, each group with its own scale and
    minimum (asymmetric, weight-only; as gpt-fast's int4 mode), through torch's CPU kernel. It reads a quarter of a
    bfloat16 weight's bytes: with the head's weights evicted by the target's pass, a product with the 8,192
    draft-vocabulary rows took 0.30 ms against 0.87 for int8 rows (2 cores, docs/speed.md §14).

    weight [N, K] float (N a multiple of 16, K of 32: `fits`); bias [N] or None; dtype: that of the inputs and
    outputs (float32, bfloat16 or float16)."""

    group = 32

    @classmethod
    def fits(cls, n: int, k: int) -> bool:
        return n % 16 == 0 and k % cls.group == 0 and hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu")

    def __init__(self, weight: torch.Tensor, dtype: torch.dtype, bias: torch.Tensor | None = None):
        n, k = weight.shape
        if not self.fits(n, k):
            raise ValueError(f"Int4Linear needs rows in multiples of 16 and columns of {self.group}, got {n} x {k}")
        super().__init__(weight, dtype, bias)
        w = weight.detach().float()
        g = w.view(n, k // self.group, self.group)
        low = g.amin(-1)  # [N, K / 32]
        step = ((g.amax(-1) - low) / 15).clamp_min(1e-12)
        q = torch.round((g - low[..., None]) / step[..., None]).clamp(0, 15).to(torch.int32).view(n, k)
        self.register_buffer("weight", torch._convert_weight_to_int4pack_for_cpu(q, 1))
        # the kernel's convention: w = (q - 8) step + zero, so zero = low + 8 step; [K / 32, N, 2]
        self.register_buffer("scale_zero", torch.stack((step.t(), (low + 8 * step).t()), -1).to(dtype).contiguous())

    def _product(self, x: torch.Tensor) -> torch.Tensor:
        return torch._weight_int4pack_mm_for_cpu(x, self.weight, self.group, self.scale_zero)


class FloatLinear(_WeightOnlyLinear):
    """x W^T (+ b) with W kept in `dtype` and multiplied through `torch_llama.PackedLinear`: on a CPU, packed
    once for oneDNN, and float32 products of a few rows through verispec's AVX2 kernel (`backends/skinny.py`) or
    MKL's sgemm (`PackedLinear._few`). On 2 cores of an AVX2 EPYC (no native bfloat16) a float32 head step at a
    150-row context took 2.3 ms for 1 and for 2 rows through sgemm against 2.8 and 3.9 through ``nn.Linear``,
    the draft vocabulary's logits 1.4 against 2.1 and 4.5 ms (docs/speed.md §24).

    weight [N, K] float; bias [N] or None; dtype: that of the weight, the inputs and the outputs."""

    def __init__(self, weight: torch.Tensor, dtype: torch.dtype, bias: torch.Tensor | None = None):
        super().__init__(weight, dtype, bias)
        self.product = PackedLinear(weight.detach().to(dtype))

    def _product(self, x: torch.Tensor) -> torch.Tensor:
        return self.product(x)


def quantize_linear(weight: torch.Tensor, dtype: torch.dtype, bias: torch.Tensor | None, bits: int) -> nn.Module:
    """`Int4Linear` where bits = 4 and the kernel takes the shape, `FloatLinear` where bits = 0, else
    `Int8Linear`."""
    if bits == 0:
        return FloatLinear(weight, dtype, bias)
    if bits == 4 and Int4Linear.fits(*weight.shape):
        return Int4Linear(weight, dtype, bias)
    return Int8Linear(weight, dtype, bias)


def drafting_copy(head: DraftHead, bits: int = 4) -> DraftHead:
    """A copy of `head` for drafting whose linear layers, and the LM head rows `attach` gives it, are modules of
    `quantize_linear`: quantized for bits = 4 (4-bit groups, or int8 rows where the 4-bit kernel does not take a
    shape) or 8 (int8 rows throughout), its predictions moved by rounding (any q is lossless for the verifier);
    bits = 0: float weights packed for the CPU's kernels (`FloatLinear`). Its steps cost less. Not for training or
    saving."""
    if bits not in (0, 4, 8):
        raise ValueError(f"bits must be 0, 4 or 8, got {bits!r}")
    q = _copy(head, head.taps)
    dtype = q.ln1.dtype
    for name, lin in list(q.named_children()):
        if isinstance(lin, nn.Linear):
            setattr(q, name, quantize_linear(lin.weight, dtype, lin.bias, bits))
    q.quant, q.drafting = bits, True
    return q.eval()


def save_head(head: DraftHead, path: str, meta: dict | None = None, dtype=torch.bfloat16) -> None:
    if head.drafting:
        raise ValueError("a drafting copy of a head is for drafting; save the head it was made from")
    state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in head.state_dict().items()}
    torch.save({"format": "verispec-draft-head-1", "config": head.config, "state": state, "meta": meta or {}}, path)


def load_head(path: str, dtype=torch.float32) -> tuple[DraftHead, dict]:
    """(the head, its metadata) from a file `save_head` wrote; ValueError for anything else."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear error
        raise ValueError(f"{path}: not a verispec draft head ({exc})") from None
    if not isinstance(blob, dict) or blob.get("format") != "verispec-draft-head-1":
        raise ValueError(f"{path}: not a verispec draft head file")
    cfg = blob["config"]
    head = DraftHead(cfg["hidden"], cfg["heads"], cfg["intermediate"], blob["state"]["vocab"],
                     cfg["rope_theta"], cfg["eps"], tuple(cfg.get("taps", ())))
    head.load_state_dict({k: (v.to(dtype) if v.is_floating_point() else v) for k, v in blob["state"].items()})
    return head.to(dtype).eval(), blob.get("meta", {})


def rope_theta_of(config) -> float:
    """The RoPE base of a transformers config (old and new attribute layouts)."""
    rope = getattr(config, "rope_parameters", None) or {}
    return float(rope.get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0)

