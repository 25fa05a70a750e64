"""The AVX2 kernel for a few float32 rows (`backends/skinny.py`): the product within float32 rounding, the same
bits for a row whatever the pass's size and the weights' storage, and a clear way out where it cannot build."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from verispec.backends import skinny  # noqa: E402

F = torch.nn.functional


def _need_kernel():
    """Skip where the platform has no kernel (no AVX2, no compiler, ...); fail where it built a wrong one."""
    if skinny.kernel() is None:
        if "self-check" in skinny.why_not():
            pytest.fail(skinny.why_not())
        pytest.skip(f"no kernel here: {skinny.why_not()}")


def _bound(x, w, exact):
    """4x the error of torch's own float32 product against the float64 one (+ a floor)."""
    return 4 * float((F.linear(x, w).double() - exact).abs().max()) + 1e-5


@pytest.mark.parametrize("shape", [(200, 576), (33, 24), (70, 1536)])
@pytest.mark.parametrize("bf16_values", [False, True])
def test_the_kernel_computes_the_product_within_float32_rounding(shape, bf16_values):
    """x [n, in] @ w.T for n across the 8-row chunks (1-9, 16, 17, 64) and `out` not a multiple of the block,
    from float32 weights and from a bfloat16 copy of bfloat16-valued ones. Control: a weight 1% off breaks
    the same bound."""
    _need_kernel()
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(*shape, generator=gen)
    if bf16_values:
        w = w.bfloat16().float()
    kw = skinny.kernel_weight(w)
    assert kw.dtype == (torch.bfloat16 if bf16_values else torch.float32)
    off = skinny.kernel_weight(w * 1.01)
    for n in (*range(1, 10), 16, 17, 64):
        x = torch.randn(n, shape[1], generator=gen)
        exact = F.linear(x.double(), w.double())
        got = skinny.linear(x, kw)
        assert got.dtype == torch.float32 and got.shape == (n, shape[0])
        assert float((got.double() - exact).abs().max()) <= _bound(x, w, exact)
        assert float((skinny.linear(x, off).double() - exact).abs().max()) > _bound(x, w, exact)
    x3 = torch.randn(2, 3, shape[1], generator=gen)  # any leading shape
    assert torch.equal(skinny.linear(x3, kw), skinny.linear(x3.reshape(6, -1), kw).reshape(2, 3, -1))


def test_a_row_has_the_same_bits_whatever_the_pass_and_the_storage():
    """A plain step (1 row) and a verification pass (n rows) give a row the same bits, for every n up to
    `skinny.ROWS`; and a bfloat16 copy of bfloat16-valued weights gives the bits of their float32 form. A
    non-contiguous x is read as its contiguous copy."""
    _need_kernel()
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(300, 576, generator=gen).bfloat16().float()
    kw = skinny.kernel_weight(w)
    x = torch.randn(skinny.ROWS, 576, generator=gen)
    full = skinny.linear(x, w)
    assert torch.equal(skinny.linear(x, kw), full)
    for n in range(1, skinny.ROWS + 1):
        assert torch.equal(skinny.linear(x[:n], kw), full[:n])
    xt = torch.randn(576, 5, generator=gen)
    assert torch.equal(skinny.linear(xt.t(), kw), skinny.linear(xt.t().contiguous(), kw))


def test_what_the_kernel_reads():
    """A bfloat16 copy only where every value is a bfloat16 one; the float32 weight itself otherwise; nothing
    (None) for a shape, dtype or layout it does not take."""
    _need_kernel()
    w = torch.randn(16, 64)
    assert skinny.kernel_weight(w) is w
    half = skinny.kernel_weight(w.bfloat16().float())
    assert half.dtype == torch.bfloat16 and torch.equal(half.float(), w.bfloat16().float())
    assert skinny.kernel_weight(torch.randn(16, 60)) is None  # in % 8
    assert skinny.kernel_weight(w.bfloat16()) is None  # float32 weights only
    assert skinny.kernel_weight(torch.randn(64, 16).t()) is None  # not contiguous
    assert skinny.kernel_weight(torch.randn(64)) is None


def test_packed_linear_takes_the_kernel_up_to_its_rows():
    """`PackedLinear` on float32 weights: up to `skinny.ROWS` rows through the kernel (its bits), past them
    oneDNN's packed kernel (within rounding of the same product)."""
    _need_kernel()
    from verispec.backends.torch_llama import PackedLinear

    gen = torch.Generator().manual_seed(5)
    w = torch.randn(120, 576, generator=gen).bfloat16().float()
    lin = PackedLinear(w)
    if not lin.packed:
        pytest.skip("no oneDNN float32 kernel in this torch build")
    assert lin.skinny and not PackedLinear(w.bfloat16()).skinny and not PackedLinear(w, pack=False).skinny
    assert not PackedLinear(w, small=False).skinny
    x = torch.randn(skinny.ROWS + 1, 576, generator=gen)
    assert torch.equal(lin(x[:skinny.ROWS]), skinny.linear(x[:skinny.ROWS], w))
    exact = F.linear(x.double(), w.double())
    assert float((lin(x).double() - exact).abs().max()) <= _bound(x, w, exact)


@pytest.fixture
def fresh_kernel():
    skinny.kernel.cache_clear()
    yield
    skinny.kernel.cache_clear()
    skinny._why = ""


def test_the_kernel_can_be_turned_off(monkeypatch, fresh_kernel):
    monkeypatch.setenv("VERISPEC_NO_KERNEL", "1")
    assert skinny.kernel() is None and "VERISPEC_NO_KERNEL" in skinny.why_not()
    assert skinny.kernel_weight(torch.randn(16, 64)) is None


def test_a_compiler_that_fails_leaves_torch_kernels_and_says_why(monkeypatch, tmp_path, fresh_kernel):
    """A compiler that cannot build the library (here `false`): no kernel, a reason, no exception."""
    if skinny.kernel() is None:
        pytest.skip(f"no kernel here: {skinny.why_not()}")
    skinny.kernel.cache_clear()
    monkeypatch.setenv("VERISPEC_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")
    assert skinny.kernel() is None and "could not build" in skinny.why_not()
    assert not list((tmp_path / "kernels").glob("*.so"))
