"""The draft head's key / value cache (`HeadCache`): a drafting chain against the training-time unrolling, a
catch-up that computes its last row alone, the lone-row attention, and the head's RoPE tables."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from verispec.backends.torch_llama import rms
from verispec.draft.head_model import DraftHead, HeadCache, attention
from verispec.draft.head_train import unrolled


def random_head(hidden=32, vocab=50, seed=0, dtype=torch.float64, taps=()) -> DraftHead:
    torch.manual_seed(seed)
    head = DraftHead(hidden, 4, 48, torch.arange(0, vocab, 2), 10000.0, taps=taps).to(dtype)
    for p in (head.o.weight, head.down.weight) + ((head.mix.weight,) if taps else ()):  # zero-init at rest:
        torch.nn.init.normal_(p, std=0.1)  # give the layer something to do
    return head.attach(torch.randn(vocab, hidden, dtype=dtype), torch.randn(vocab, hidden, dtype=dtype))


@pytest.mark.parametrize("taps", [(), (2, 5)], ids=["f", "f+taps"])
@pytest.mark.parametrize("P", [0, 3, 7])
def test_unrolled_training_sees_what_a_drafting_chain_sees(P, taps):
    """Depth d of `unrolled` at position P + d - 1 equals the d-th step of a chain drafted with `HeadCache`
    after real rows 0..P: the training-time test trains exactly what drafting runs (real rows [f | taps])."""
    head = random_head(taps=taps)
    T, W = 12, 32 * (1 + len(taps))
    tok, fe = torch.randint(0, 50, (1, T)), torch.randn(1, T, W, dtype=torch.float64)
    with torch.no_grad():
        outs = unrolled(head, tok, fe, 4)
    cache = HeadCache(head, rows=4, dtype=torch.float64)  # rows=4: the cache grows on the way
    f_in = torch.cat([torch.zeros(1, W, dtype=torch.float64), fe[0, :P]])  # f_{i-1} for i = 0..P
    f_hat = cache.step(tok[0, :P + 1], f_in, torch.arange(P + 1))[-1]
    assert torch.allclose(f_hat, outs[0][0, P], atol=1e-10)
    for d in range(2, 5):
        i = P + d - 1
        f_hat = cache.step(tok[0, i:i + 1], f_hat[None], torch.tensor([i]))[-1]
        assert torch.allclose(f_hat, outs[d - 1][0, i], atol=1e-6), d


def test_unrolled_control_a_chain_row_that_misses_its_predecessor_differs():
    """Negative control for the test above: the same chain with the depth-2 row dropped from the cache
    (what a wrong mask in `unrolled` would train) no longer matches depth 3."""
    head = random_head()
    tok, fe = torch.randint(0, 50, (1, 10)), torch.randn(1, 10, 32, dtype=torch.float64)
    with torch.no_grad():
        outs = unrolled(head, tok, fe, 3)
    P = 4
    cache = HeadCache(head, dtype=torch.float64)
    f_hat = cache.step(tok[0, :P + 1], torch.cat([torch.zeros(1, 32, dtype=torch.float64), fe[0, :P]]),
                       torch.arange(P + 1))[-1]
    f_hat = cache.step(tok[0, P + 1:P + 2], f_hat[None], torch.tensor([P + 1]))[-1]
    cache.len -= 1  # forget the depth-2 row
    f_hat = cache.step(tok[0, P + 2:P + 3], f_hat[None], torch.tensor([P + 2]))[-1]
    assert not torch.allclose(f_hat, outs[2][0, P + 2], atol=1e-3)


def _rotate_half_rope(head, x, pos):
    """RoPE as transformers writes it, angles computed per call: x cos + rotate_half(x) sin. x [..., T, D]."""
    ang = pos.to(torch.float32)[:, None] * head.inv_freq[None]
    cos, sin = (torch.cat((t, t), -1).to(x.dtype) for t in (ang.cos(), ang.sin()))
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), -1) * sin


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_tables_give_the_per_call_angles_bits(dtype):
    """`DraftHead.project` reads cos and sin from tables built once (and grown, and rebuilt for another dtype):
    its q and k equal, bit for bit, RoPE with the angles computed per call, at positions before and past the
    tables' first size; a table one position off (the control) does not."""
    head = random_head(hidden=64, dtype=dtype)
    for pos in (torch.arange(0, 40), torch.tensor([5]), torch.tensor([3000, 3001, 3001]), torch.arange(1020, 1030)):
        x = torch.randn(1, pos.numel(), 64).to(dtype)
        q, k, _ = head.project(x, pos)
        B, T = 1, pos.numel()
        q0, k0, _ = head.qkv(rms(x, head.ln1, head.eps)).view(B, T, 3, head.nh, head.d).permute(2, 0, 3, 1, 4)
        assert torch.equal(q, _rotate_half_rope(head, q0, pos)) and torch.equal(k, _rotate_half_rope(head, k0, pos))
        assert not torch.equal(q, _rotate_half_rope(head, q0, pos + 1))
    fresh = random_head(hidden=64, dtype=dtype)
    with torch.inference_mode():  # tables first built while drafting must still serve training
        fresh.project(torch.randn(1, 3, 64).to(dtype), torch.arange(3))
    x = torch.randn(1, 5, 64).to(dtype).requires_grad_()
    q, k, _ = fresh.project(x, torch.arange(5))
    (q.float().sum() + k.float().sum()).backward()
    assert x.grad is not None and bool(x.grad.abs().sum() > 0)



@pytest.mark.parametrize("taps", [(), (2, 5)], ids=["f", "f+taps"])
@pytest.mark.parametrize("keep", [0, 6])
def test_a_last_only_catch_up_gives_the_full_steps_last_row_and_cache(taps, keep):
    """`step(last_only=True)` writes every row's key and value and returns the last row's f̂, as the full step
    does (the catch-up of `HeadDrafter._sync`), so a chain step after it sees the same cache."""
    head = random_head(taps=taps)
    W = 32 * (1 + len(taps))
    tok, fe = torch.randint(0, 50, (11,)), torch.randn(11, W, dtype=torch.float64)
    outs = []
    for last_only in (False, True):
        cache = HeadCache(head, dtype=torch.float64)
        if keep:
            cache.step(tok[:keep], fe[:keep], torch.arange(keep))
        f = cache.step(tok[keep:], fe[keep:], torch.arange(keep, 11), last_only=last_only)
        nxt = cache.step(tok[:1], f[-1:, :32], torch.tensor([11]))
        outs.append((f[-1], cache.k[:, :11].clone(), cache.v[:, :11].clone(), nxt))  # the rows of the 11 tokens
    (f0, k0, v0, n0), (f1, k1, v1, n1) = outs
    assert torch.allclose(f0, f1, atol=1e-12) and torch.equal(k0, k1) and torch.equal(v0, v1)
    assert torch.allclose(n0, n1, atol=1e-12)


def test_last_only_control_a_last_row_that_misses_a_column_differs():
    """Control for the test above: the last row computed with one earlier column hidden (what a last-only path
    that forgot a row would give) is told apart by the same comparison."""
    head = random_head()
    tok, fe = torch.randint(0, 50, (9,)), torch.randn(9, 32, dtype=torch.float64)
    full = HeadCache(head, dtype=torch.float64).step(tok, fe, torch.arange(9), last_only=True)[-1]
    mask = torch.ones(9, 9, dtype=torch.bool).tril()
    mask[-1, 3] = False
    hidden = HeadCache(head, dtype=torch.float64).step(tok, fe, torch.arange(9), mask)[-1]
    assert not torch.allclose(full, hidden, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("masked", [False, True])
def test_a_lone_query_row_attends_as_it_would_alone(dtype, masked):
    """`attention` runs a lone bfloat16 row as two (the CPU kernel's faster shape there; other dtypes alone): the
    row's output is the fused kernel's for that row alone (float64 to 1e-12, float32 to 1e-5; bfloat16 to its
    rounding); a mask that hides one more column (the control) is told apart."""
    torch.manual_seed(0)
    for S in (1, 7, 300):
        q = torch.randn(1, 4, 1, 16, dtype=dtype)
        k, v = torch.randn(1, 4, S, 16, dtype=dtype), torch.randn(1, 4, S, 16, dtype=dtype)
        mask = torch.ones(1, S, dtype=torch.bool)
        if masked and S > 1:
            mask[0, ::3] = False
        m = mask if masked else None
        got, want = attention(q, k, v, m), F.scaled_dot_product_attention(q, k, v, attn_mask=m)
        tol = {torch.float64: 1e-12, torch.float32: 1e-5}.get(dtype, 1e-2)
        assert got.shape == want.shape and torch.allclose(got.double(), want.double(), atol=tol)
        if S > 1:
            off = mask.clone()
            off[0, 1] = False  # visible in both masks
            assert not torch.allclose(attention(q, k, v, off).double(), want.double(), atol=tol)
