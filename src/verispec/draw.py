"""The sampled plain step's draw in one C call (`draw.c`): `sampling.sample_logits` without top-k, top-p or min-p.

Why: the torch path (a float64 copy of the logits, their maximum, exp, then numpy's block sums and searches) is
~10 calls over 49,152 logits, 0.5 ms a step right after a llama.cpp pass (2 cores of a Xeon, docs/speed.md §32),
~2% of a 23 ms step and as much as llama-cpp-python's whole per-token overhead. The kernel reads the logits in
place, once for the maximum and once for the weights and block sums: 0.15 ms. It computes the same law in double
precision by the same two-level search, so a draw differs from the torch path's only where the two exp
implementations round a CDF boundary apart (~1e-16).

Where no helper can be built (`native.unavailable`: no x86-64 Linux, AVX2, compiler or glibc's libmvec, or
``VERISPEC_NO_KERNEL=1``), `kernel()` is None, `why_not()` says why and `sample_logits` keeps its torch path.
"""
from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

from .native import try_load

__all__ = ["draw", "kernel", "why_not"]

SOURCE = Path(__file__).with_name("draw.c")
FLAGS = ("-O3", "-mavx2", "-mfma", "-fopenmp-simd", "-shared", "-fPIC", "-lmvec", "-lm")
_why = ""


def why_not() -> str:
    """Why `kernel()` is None ("" when it is not, or before the first call)."""
    return _why


@functools.lru_cache(maxsize=1)
def kernel():
    """ctypes ``draw_softmax(x, n, 1 / T, u) -> token or -1``, checked against the torch path, or None."""
    global _why
    lib, _why = try_load(SOURCE, FLAGS)
    fn = getattr(lib, "draw_softmax", None)
    if fn is None:
        _why = _why or f"{SOURCE.stem} lacks draw_softmax"
        return None
    fn.restype, fn.argtypes = ctypes.c_long, [ctypes.c_void_p, ctypes.c_long, ctypes.c_double, ctypes.c_double]
    from .sampling import inverse_cdf

    x = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 3  # three blocks and a partial one
    w = (x.double() - x.double().max()).mul(0.5).exp().numpy()
    for u in (1e-9, 0.1, 0.5, 0.77, 0.999):
        if fn(x.data_ptr(), 1000, 0.5, u) != inverse_cdf(w, u):
            _why = f"{SOURCE.stem} drew another token than the torch path in its self-check"
            return None
    return fn


def draw(logits: torch.Tensor, temperature: float, u: float) -> int | None:
    """One draw from softmax(logits / temperature) with the uniform u; logits [V] float32 on the CPU, read in
    place. None where the kernel does not decide: no kernel here, logits it cannot read in place, or logits
    without a finite softmax (the caller's path raises the clear error)."""
    fn = kernel()
    if fn is None or logits.dtype != torch.float32 or logits.device.type != "cpu" or not logits.is_contiguous():
        return None
    token = fn(logits.data_ptr(), logits.shape[0], 1.0 / temperature, u)
    return token if token >= 0 else None
