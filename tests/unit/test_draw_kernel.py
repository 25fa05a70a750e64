"""The C draw (`verispec.draw`): the torch path's token for the same uniform, read in place; where it cannot
decide, `sample_logits` takes the torch path (and its clear errors). Its law is checked by the grid tests of
test_sample_logits.py, which run on both paths."""
import numpy as np
import pytest
import torch

from verispec import draw, native
from verispec.sampling import SamplingParams, sample_logits


@pytest.fixture
def fresh():
    draw.kernel.cache_clear()
    yield
    draw.kernel.cache_clear()
    draw._why = ""


@pytest.fixture
def built(fresh):
    """The kernel; a skip only where no C helper can be built here (a kernel that fails its self-check fails)."""
    if native.unavailable():
        pytest.skip(f"no C helpers here: {native.unavailable()}")
    fn = draw.kernel()
    assert fn is not None, draw.why_not()
    yield fn


def _torch_path(monkeypatch, logits, params, u):
    monkeypatch.setenv("VERISPEC_NO_KERNEL", "1")
    draw.kernel.cache_clear()
    try:
        return sample_logits(logits, params, u)
    finally:
        monkeypatch.delenv("VERISPEC_NO_KERNEL")
        draw.kernel.cache_clear()


def test_same_token_as_the_torch_path(monkeypatch, built):
    """SmolLM2's vocabulary (192 full blocks), three temperatures, 300 uniforms: the same token every time (the
    paths part only where their exp implementations round a CDF boundary apart, ~1e-16 of the mass)."""
    rng = np.random.default_rng(1)
    for seed, t in enumerate((1.0, 0.6, 1.7)):
        logits = torch.randn(49152, generator=torch.Generator().manual_seed(seed)) * 4
        us = rng.random(100).tolist()
        mine = [draw.draw(logits, t, u) for u in us]
        theirs = [_torch_path(monkeypatch, logits, SamplingParams(t), u) for u in us]
        assert mine == theirs
        assert len(set(mine)) > 20  # not one token drawn over and over


def test_declines_what_it_cannot_read_or_decide(built):
    x = torch.randn(600)
    assert draw.draw(x[::2], 1.0, 0.5) is None  # not contiguous
    assert draw.draw(x.double(), 1.0, 0.5) is None  # not float32
    for bad in (torch.full((300,), float("-inf")), torch.tensor([0.0, float("inf")]), torch.tensor([0.0, float("nan")])):
        assert draw.draw(bad, 1.0, 0.5) is None  # `sample_logits` raises its clear error instead
    assert draw.draw(x, 1.0, 0.5) is not None  # control


def test_turned_off_or_unbuildable_leaves_the_torch_path(monkeypatch, tmp_path, fresh):
    monkeypatch.setenv("VERISPEC_NO_KERNEL", "1")
    assert draw.kernel() is None and "VERISPEC_NO_KERNEL" in draw.why_not()
    assert draw.draw(torch.randn(10), 1.0, 0.5) is None
    assert sample_logits(torch.tensor([0.0, 5.0]), SamplingParams(1.0), 0.5) == 1
    monkeypatch.delenv("VERISPEC_NO_KERNEL")
    if native.unavailable():
        pytest.skip(native.unavailable())
    draw.kernel.cache_clear()
    monkeypatch.setenv("VERISPEC_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # a compiler that builds nothing
    assert draw.kernel() is None and "could not build" in draw.why_not()
    assert not list((tmp_path / "kernels").glob("*.so"))
