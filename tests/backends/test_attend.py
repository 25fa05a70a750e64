"""The prefill's causal attention kernel (`backends/attend.py`, `attend.c`): softmax(q k^T / sqrt(D) + mask) v
within float32 rounding for every length across its 64-row blocks, grouped heads and not; a clear way out (None)
where it does not apply; and a self-check that refuses a kernel computing something else."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from verispec.backends import attend  # noqa: E402


def _need_kernel():
    """Skip where the platform has no kernel (no AVX-512, no compiler, ...); fail where it built a wrong one."""
    if attend.kernel() is None:
        if "self-check" in attend.why_not():
            pytest.fail(attend.why_not())
        pytest.skip(f"no kernel here: {attend.why_not()}")


def _exact(q, k, v):
    """The attention in float64, written out (q [T, H, D], k, v [T, Hk, D]) -> [T, H, D]."""
    T, H, D = q.shape
    G = H // k.shape[1]
    k, v = (t.double().repeat_interleave(G, dim=1) for t in (k, v))  # [T, H, D]
    s = torch.einsum("thd,shd->hts", q.double(), k) / math.sqrt(D)
    s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), -math.inf)
    return torch.einsum("hts,shd->thd", s.softmax(-1), v)


def _inputs(T, H, Hk, seed):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(T, H, attend.HEAD_DIM, generator=gen) * 2  # sharp rows: the running maximum matters
    k, v = (torch.randn(T, Hk, attend.HEAD_DIM, generator=gen).half() for _ in range(2))
    return q, k, v


@pytest.mark.parametrize("T", [1, 2, 63, 64, 65, 130, 300])
@pytest.mark.parametrize("H,Hk", [(9, 3), (4, 4)])
def test_the_kernel_computes_causal_attention_within_float32_rounding(T, H, Hk):
    """Against the float64 attention, within 4x torch's own float32 error (+ a floor), for lengths across the
    blocks (1, a block, one over, several and a partial one), 3 query heads to a key/value head and 1 to 1.
    Control: the same bound rejects the output of keys one position late (a mask off by one) and of values 1% off."""
    _need_kernel()
    q, k, v = _inputs(T, H, Hk, seed=T + H)
    exact = _exact(q, k, v)
    bound = 4 * float((attend.reference(q, k, v).double() - exact).abs().max()) + 1e-6
    got = attend.causal(q, k, v)
    assert got.dtype == torch.float32 and got.shape == (T, H, attend.HEAD_DIM)
    assert float((got.double() - exact).abs().max()) <= bound
    assert float((attend.causal(q, k, v * 1.01).double() - exact).abs().max()) > bound
    if T > 1:
        late = torch.cat([k[:1], k[:-1]])  # key j read at position j + 1
        assert float((attend.causal(q, late, v).double() - exact).abs().max()) > bound


def test_the_kernel_gives_the_same_result_on_one_thread_and_two():
    """Tasks are split across threads, never the sums within one: the thread count changes no bit."""
    _need_kernel()
    q, k, v = _inputs(200, 9, 3, seed=5)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = attend.causal(q, k, v)
        torch.set_num_threads(2)
        assert torch.equal(attend.causal(q, k, v), one)
    finally:
        torch.set_num_threads(threads)


def test_what_the_kernel_does_not_take():
    """None for a head size other than 64, query heads not a multiple of the key/value heads, other dtypes or
    mismatched shapes (and `attention` computes torch's there); a non-contiguous q is read as its copy."""
    _need_kernel()
    q, k, v = _inputs(20, 6, 2, seed=1)
    assert attend.causal(q[..., :32], k[..., :32], v[..., :32]) is None
    assert attend.causal(q[:, :5], k, v) is None
    assert attend.causal(q.half(), k, v) is None
    assert attend.causal(q, k.float(), v) is None
    assert attend.causal(q, k, v[:10]) is None
    short = (q[..., :32], k[..., :32], v[..., :32])  # `attention` then answers with torch's
    assert torch.equal(attend.attention(*short), attend.reference(*short))
    qt = q.transpose(0, 1).contiguous().transpose(0, 1)
    assert torch.equal(attend.causal(qt, k, v), attend.causal(q, k, v))


def test_the_self_check_refuses_a_wrong_kernel(monkeypatch):
    """A library whose attend_causal writes anything else (here: zeros) is
    refused at its first use with a reason; VERISPEC_NO_KERNEL=1 turns the kernel off. `causal` is then None."""

    class _Wrong:
        @staticmethod
        def attend_causal(q, k, v, o, T, H, Hk, d, threads):
            import ctypes

            n = T * H * d
            out = (ctypes.c_float * n).from_address(o)
            for i in range(n):
                out[i] = 0.0
            return 0

    monkeypatch.setattr(attend, "try_load", lambda source, flags, why: (_Wrong(), ""))
    attend.kernel.cache_clear()
    try:
        assert attend.kernel() is None and "self-check" in attend.why_not()
        q, k, v = _inputs(10, 2, 2, seed=0)
        assert attend.causal(q, k, v) is None
        monkeypatch.undo()
        monkeypatch.setenv("VERISPEC_NO_KERNEL", "1")
        attend.kernel.cache_clear()
        assert attend.kernel() is None and "VERISPEC_NO_KERNEL" in attend.why_not()
    finally:
        monkeypatch.undo()
        attend.kernel.cache_clear()
