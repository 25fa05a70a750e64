"""LeanLlama (the torch backend's fast path) computes what transformers' Llama computes."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from verispec.backends import load_backend  # noqa: E402
from verispec.backends.torch_llama import cpu_bf16  # noqa: E402
from verispec.backends.torch_llama import supports  # noqa: E402

PROMPT = [1, 17, 42, 99, 5, 63, 8, 120, 33]
TREE_PARENT = [-1, 0, -1, 1, 0, 2, 3]
TREE_TOKENS = [10, 20, 30, 40, 50, 60, 70]


@pytest.fixture(scope="module")
def pair(tiny_llama_dir):
    lean, hf = load_backend("torch", tiny_llama_dir), load_backend("torch", tiny_llama_dir, lean=False)
    assert lean._lean is not None and hf._lean is None
    return lean, hf


def test_same_logits_and_hidden_states_as_transformers(tiny_llama_dir):
    """Prefill in chunks, a tree, commit of a non-contiguous path, plain steps, rollback: same rows."""
    pair = [load_backend("torch", tiny_llama_dir, lean=lean, prefill_chunk=4) for lean in (None, False)]  # chunks
    assert pair[0]._lean is not None and pair[1]._lean is None
    for be in pair:
        be.reset(PROMPT)
    outs = []
    for be in pair:
        rows = [be.score(torch.tensor(TREE_TOKENS), torch.tensor(TREE_PARENT), return_hidden=True)]
        be.commit([0, 1, 3], 77)  # nodes 0, 1, 3: rows gathered out of order
        rows.append(be.score(return_hidden=True))
        be.commit([], 5)
        be.truncate(len(PROMPT) + 1, 9)  # roll back into the accepted path
        rows.append(be.score(torch.tensor([4, 6]), torch.tensor([-1, 0]), return_hidden=True))
        outs.append(rows)
    for (lg_a, h_a), (lg_b, h_b) in zip(*outs):
        torch.testing.assert_close(lg_a, lg_b, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(h_a, h_b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n", [40, 250])
def test_a_prefill_in_one_pass_matches_transformers(pair, n):
    """A prompt of more than 16 tokens in one chunk, no boolean mask built: the fused kernel's own causal mask
    (40 tokens) or the blocked causal attention (250 tokens: blocks of 128, the last one short). The same logits
    and features as transformers'."""
    prompt = [(7 * i + 3) % 120 + 1 for i in range(n)]
    outs = []
    for be in pair:  # the default chunk, 2048 tokens: one pass
        be.reset(prompt)
        outs.append(be.score(torch.tensor([4, 6]), torch.tensor([-1, 0]), return_hidden=True))
    torch.testing.assert_close(outs[0][0], outs[1][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs[0][1], outs[1][1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("T, S", [(300, 300), (130, 500), (17, 40), (129, 129)])
def test_blocked_causal_attention_is_masked_attention(T, S):
    """`attend(causal=True)` past `CAUSAL_BLOCK` rows computes block by block; each of the last T of S rows sees
    the columns up to its own, as the fused kernel with that boolean mask computes. Control: the same comparison
    rejects a mask one column off (each row seeing the next row's key too)."""
    from verispec.backends.torch_llama import attend

    gen = torch.Generator().manual_seed(T + S)
    H, Hk, D = 6, 2, 16
    q, k, v = (torch.randn(1, n, rows, D, generator=gen) for n, rows in ((H, T), (Hk, S), (Hk, S)))
    rows = torch.arange(S)
    out = attend(q, k.transpose(-1, -2).contiguous(), v, None, causal=True)  # keys stored transposed
    for shift, same in ((0, True), (1, False)):
        mask = rows[None, :] <= rows[S - T:, None] + shift  # [T, S]
        ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask[None, None], enable_gqa=True)
        assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5) == same


@pytest.mark.parametrize("T, S", [(1, 37), (1, 64), (5, 100), (16, 65)])
def test_padded_few_row_attention_is_attention(T, S):
    """A few rows' keys padded to a multiple of `PAD` (`attend`'s valid; the padding holds finite junk, as a cache's
    stale rows do) give attention over the first S keys: within bfloat16's rounding of the float64 result, as the
    unpadded call is. Control: the same comparison rejects the padded call without `valid` (the padding seen)."""
    from verispec.backends.torch_llama import PAD, attend, padded

    gen = torch.Generator().manual_seed(T * S)
    H, Hk, D, rows = 6, 2, 64, 256
    Sp = padded(S, rows, torch.bfloat16, torch.device("cpu"))
    assert Sp % PAD == 0 and S <= Sp < S + PAD
    q = torch.randn(1, H, T, D, generator=gen)
    k, v = (torch.randn(1, Hk, rows, D, generator=gen) * 3 for _ in range(2))
    mask = torch.rand(T, S, generator=gen) < 0.8
    mask[:, 0] = True  # every row sees a key
    ref = torch.nn.functional.scaled_dot_product_attention(
        q.double(), k[:, :, :S].double(), v[:, :, :S].double(), attn_mask=mask[None, None], enable_gqa=True)
    kt, vb = k.transpose(-1, -2).contiguous().bfloat16(), v.bfloat16()
    plain = attend(q.bfloat16(), kt[..., :S], vb[:, :, :S], mask)
    tol = 2 * (plain.double() - ref).abs().max().item() + 1e-3
    out = attend(q.bfloat16(), kt[..., :Sp], vb[:, :, :Sp], mask, valid=S)
    assert (out.double() - ref).abs().max().item() <= tol
    if Sp > S:
        seen = torch.cat((mask, torch.ones(T, Sp - S, dtype=torch.bool)), 1)
        wrong = attend(q.bfloat16(), kt[..., :Sp], vb[:, :, :Sp], seen)
        assert (wrong.double() - ref).abs().max().item() > tol


def test_padding_only_where_onednn_multiplies():
    """`padded`: reduced precision on a CPU rounds up to a multiple of PAD, capped by the cache's rows; float32 (MKL's
    products, no kernel built per shape) and other devices keep the key count."""
    from verispec.backends.torch_llama import PAD, padded

    cpu = torch.device("cpu")
    assert padded(1, 4096, torch.bfloat16, cpu) == PAD and padded(PAD, 4096, torch.float16, cpu) == PAD
    assert padded(PAD + 1, 4096, torch.bfloat16, cpu) == 2 * PAD and padded(100, 100, torch.bfloat16, cpu) == 100
    assert padded(100, 4096, torch.float32, cpu) == 100
    assert padded(100, 4096, torch.bfloat16, torch.device("meta")) == 100


def test_bfloat16_lean_passes_agree_with_transformers(tiny_llama_dir):
    """In bfloat16 a tree pass and plain steps go through the padded few-row attention: their logits agree with
    transformers' forward in bfloat16 to its rounding, on a context that is not a multiple of PAD."""
    lean = load_backend("torch", tiny_llama_dir, dtype="bfloat16")
    hf = load_backend("torch", tiny_llama_dir, dtype="bfloat16", lean=False)
    prompt = (PROMPT * 8)[:70]
    for be in (lean, hf):
        be.reset(prompt)
    a = lean.score(torch.tensor(TREE_TOKENS), torch.tensor(TREE_PARENT))
    b = hf.score(torch.tensor(TREE_TOKENS), torch.tensor(TREE_PARENT))
    assert (a - b).abs().max().item() <= 0.05 * b.abs().max().item()
    for be in (lean, hf):
        be.commit([0, 1], 7)
    torch.testing.assert_close(lean.score()[0], hf.score()[0], atol=0.05 * b.abs().max().item(), rtol=0)


def test_the_cache_grows_as_the_context_does(tiny_llama_dir):
    """Rows are allocated by doubling; prefill past the first allocation gives the same logits."""
    lean = load_backend("torch", tiny_llama_dir)
    hf = load_backend("torch", tiny_llama_dir, lean=False)
    lean._lean._grow(8)  # start small: the prompt and the draft below need two reallocations
    prompt = (PROMPT * 12)[:100]
    for be in (lean, hf):
        be.reset(prompt)
    torch.testing.assert_close(lean.score(torch.tensor([3, 4]), torch.tensor([-1, 0])),
                               hf.score(torch.tensor([3, 4]), torch.tensor([-1, 0])), atol=1e-5, rtol=1e-5)
    assert lean._lean.rows >= 101


def test_a_wrong_rope_would_be_caught(pair):
    """Negative control: the same comparison fails when the lean pass uses shifted positions."""
    lean, hf = pair
    for be in pair:
        be.reset(PROMPT)
    good = lean.score(torch.tensor([3, 4]), torch.tensor([-1, 0]))
    cos, sin = lean._lean.cos, lean._lean.sin
    lean._lean.cos, lean._lean.sin = cos.roll(1, 0), sin.roll(1, 0)
    try:
        lean.reset(PROMPT)
        bad = lean.score(torch.tensor([3, 4]), torch.tensor([-1, 0]))
    finally:
        lean._lean.cos, lean._lean.sin = cos, sin
    ref = hf.score(torch.tensor([3, 4]), torch.tensor([-1, 0]))
    torch.testing.assert_close(good, ref, atol=1e-5, rtol=1e-5)
    assert (bad - ref).abs().max() > 1e-3


def test_only_plain_llamas(tiny_llama_dir):
    import transformers

    assert not supports(torch.nn.Linear(2, 2))
    cfg = transformers.LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                   num_attention_heads=2, attention_bias=True)
    assert not supports(transformers.LlamaForCausalLM(cfg))


@pytest.mark.skipif(not cpu_bf16(), reason="oneDNN has no bfloat16 kernel on this CPU: nothing is packed")
def test_packed_weights_compute_what_f_linear_does():
    """`PackedLinear` (weights reordered once for oneDNN) is F.linear bit for bit, at every row count a step,
    a tree or a prefill chunk has, for 2-D and 3-D inputs; a weight it does not pack (float64) goes to F.linear."""
    from verispec.backends.torch_llama import PackedLinear

    gen = torch.Generator().manual_seed(0)
    w = torch.randn(96, 64, generator=gen).bfloat16()
    lin = PackedLinear(w)
    assert lin.packed
    for rows in (1, 2, 7, 16, 17, 300):
        x = torch.randn(rows, 64, generator=gen).bfloat16()
        assert torch.equal(lin(x), torch.nn.functional.linear(x, w))
        assert torch.equal(lin(x[None]), torch.nn.functional.linear(x[None], w))
    off = PackedLinear(w * 1.01, pack=False)  # a control: another weight through the unpacked path differs
    assert not torch.equal(off(x), lin(x))
    w64 = w.double()
    assert not PackedLinear(w64).packed
    assert torch.equal(PackedLinear(w64)(x.double()), torch.nn.functional.linear(x.double(), w64))


def test_packed_float32_weights_compute_f_linear_within_its_rounding():
    """In float32 `PackedLinear` runs oneDNN's packed kernel where torch has it (any x86 CPU): not F.linear's bits
    (MKL's sgemm sums in another order) but as close to the float64 product as F.linear is, at every row count,
    for 2-D and 3-D inputs. Control: a weight 1% off is told apart by the same bound."""
    from verispec.backends.torch_llama import PackedLinear

    gen = torch.Generator().manual_seed(1)
    w = torch.randn(200, 576, generator=gen)
    lin = PackedLinear(w)
    if not lin.packed:
        pytest.skip("no oneDNN float32 kernel in this torch build")
    off = PackedLinear(w * 1.01)
    for rows in (1, 2, 3, 4, 5, 7, 16, 17, 300):
        x = torch.randn(rows, 576, generator=gen)
        exact = torch.nn.functional.linear(x.double(), w.double())
        bound = 4 * float((torch.nn.functional.linear(x, w).double() - exact).abs().max()) + 1e-5
        for got in (lin(x), lin(x[None])[0]):
            assert got.dtype == torch.float32 and got.shape == (rows, 200)
            assert float((got.double() - exact).abs().max()) <= bound
        assert float((off(x).double() - exact).abs().max()) > bound


def test_a_few_float32_rows_round_alike_whatever_their_number():
    """Float32 passes of at most FEW rows (a plain step, a short draft's verification) multiply through
    `PackedLinear._few` where verispec's kernel does not build, padded to FEW rows: each row's bits are the same
    for every n <= FEW, and the output is contiguous (2-D and 3-D). Without the padding one row would go to MKL's
    sgemv, which rounds it apart (on an AMD EPYC with AVX2: ~5e-7 off), and the test would fail."""
    from verispec.backends.torch_llama import FEW, PackedLinear

    gen = torch.Generator().manual_seed(2)
    w = torch.randn(300, 576, generator=gen)
    lin = PackedLinear(w)
    if not lin.packed:
        pytest.skip("no oneDNN float32 kernel in this torch build")
    assert lin.few and not PackedLinear(w.bfloat16()).few and not PackedLinear(w, pack=False).few
    assert not PackedLinear(w, small=False).few  # every pass packed (a caller that drops the plain weight)
    lin._skinny = None  # where verispec's own kernel builds, it takes these passes (`test_skinny.py`)
    x = torch.randn(FEW, 576, generator=gen)
    full = lin(x)
    for n in range(1, FEW + 1):
        for got in (lin(x[:n]), lin(x[None, :n])[0]):
            assert got.is_contiguous() and torch.equal(got, full[:n])


@pytest.mark.skipif(not cpu_bf16(), reason="oneDNN has no bfloat16 kernel on this CPU: nothing is packed")
def test_packed_and_plain_lean_passes_agree_bit_for_bit(tiny_llama_dir):
    """In bfloat16, LeanLlama with packed weights (the default) gives the logits and features of LeanLlama with
    plain ones, exactly: prefill, a tree, a step."""
    from verispec.backends.torch_llama import LeanLlama

    be = load_backend("torch", tiny_llama_dir, dtype="bfloat16")
    runs = []
    for pack in (True, False):
        lean = LeanLlama(be.model, 256, pack=pack)
        n = len(PROMPT)
        rows = [lean.forward(torch.tensor(PROMPT), torch.arange(n), 0, None, hidden=True, taps=(1,))]
        seen = torch.ones(len(TREE_TOKENS), n + len(TREE_TOKENS), dtype=torch.bool)
        seen[:, n:] = torch.tril(seen[:, n:])
        rows.append(lean.forward(torch.tensor(TREE_TOKENS), torch.arange(n, n + 7), n, seen, hidden=True, taps=(1,)))
        rows.append(lean.forward(torch.tensor([3]), torch.tensor([n]), n, None, hidden=True, taps=(1,)))
        runs.append(rows)
    for (lg_a, h_a), (lg_b, h_b) in zip(*runs):
        assert lg_a.dtype == torch.bfloat16 and torch.equal(lg_a, lg_b) and torch.equal(h_a, h_b)
