"""y = x W^T for a few float32 rows of x, reading W once: a small AVX2 kernel (`skinny.c`), compiled on first use.

Why: where a CPU lacks native bfloat16 (AVX2, no AVX-512), torch computes in float32, and a pass over a few rows
(a plain decode step, a draft's verification, a draft head's step) is bound by reading the weights from memory.
Neither of torch's kernels streams them at the memory's speed for such shapes: oneDNN's packed kernel reads
SmolLM2-135M's 540 MB of float32 products in ~52 ms for one row and ~80 for 2-8, MKL's sgemm (``w @ x.T``) in
~45 for 2-4 columns and 60-95 for 1 or 5-8 (2 cores of an AMD EPYC, Zen 3). This kernel reads each weight row
once for up to 8 rows of x held in L1: ~33 ms for 1-4 rows and ~41 for 8 from float32 weights, and where the
weights are bfloat16 values (a BF16 checkpoint or GGUF computed in float32) from a bfloat16 copy, widened in
registers: ~20 ms for 1-5 rows, ~27 for 8, the same products to the bit (docs/speed.md §25).

Numbers: each output is one 8-lane FMA chain over the inputs and a fixed horizontal sum, so a row's bits do not
depend on how many rows share the pass (a plain step and a verification pass agree) nor on the weights' storage;
they differ from sgemm's by float32 rounding.

When: float32 on an x86-64 Linux CPU with AVX2 and FMA (torch's CPU capability AVX2 or AVX512), torch running
its threads on GNU OpenMP (the kernel's parallel loop then runs on torch's own thread pool), and a C compiler
(``$CC``, ``cc`` or ``gcc``). The library is built once into the cache folder (``skinny-<digest>.so``, ~1 s) and
checked against torch on a small product before use. Anything missing: `kernel()` is None, `why_not()` says
why, and callers keep torch's kernels. ``VERISPEC_NO_KERNEL=1`` turns it off (for A/B runs).
"""
from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

from ..native import gomp_loaded, try_load

__all__ = ["ROWS", "kernel", "kernel_weight", "linear", "why_not"]

ROWS = 64  # passes of at most this many rows take the kernel (oneDNN's packed kernel is faster from ~64-128 on)
SOURCE = Path(__file__).with_name("skinny.c")
FLAGS = ("-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC")
_why = ""


def why_not() -> str:
    """Why `kernel()` is None ("" when it is not, or before the first call)."""
    return _why


@functools.lru_cache(maxsize=1)
def kernel() -> dict | None:
    """The compiled entry points {weight dtype: ctypes ``skinny_*(x, w, y, n, in, out, threads)`` of raw
    pointers}, or None."""
    global _why
    lib, _why = try_load(SOURCE, FLAGS, "" if gomp_loaded() else "torch does not run its threads on GNU OpenMP here")
    try:
        fns = {torch.float32: lib.skinny_f32, torch.bfloat16: lib.skinny_bf16} if lib else None
    except AttributeError as e:
        _why = f"{SOURCE.stem} lacks an entry point: {e}"
    if _why:
        return None
    gen = torch.Generator().manual_seed(0)
    w, x = torch.randn(40, 24, generator=gen).bfloat16(), torch.randn(9, 24, generator=gen)
    for dtype, fn in fns.items():
        fn.restype, fn.argtypes = None, [ctypes.c_void_p] * 3 + [ctypes.c_long] * 3 + [ctypes.c_int]
        y, wt = torch.empty(9, 40), w.to(dtype)  # wt held: a pointer into a freed temporary would be garbage
        fn(x.data_ptr(), wt.data_ptr(), y.data_ptr(), 9, 24, 40, torch.get_num_threads())
        if not torch.allclose(y, x @ w.float().T, rtol=1e-5, atol=1e-5):
            _why = f"{SOURCE.stem} computed a wrong product in its self-check ({dtype})"
            return None
    return fns


def kernel_weight(w: torch.Tensor) -> torch.Tensor | None:
    """What the kernel reads for a float32 weight [out, in]: a bfloat16 copy where every value is a bfloat16 one
    (the same products from half the bytes), else `w` itself; None where the kernel does not apply (no kernel,
    not a contiguous float32 CPU matrix, or `in` not a multiple of 8)."""
    if (kernel() is None or w.dtype != torch.float32 or w.device.type != "cpu" or w.dim() != 2
            or not w.is_contiguous() or w.shape[1] % 8):
        return None
    half = w.bfloat16()
    return half if torch.equal(half.float(), w) else w


def linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x [..., in] float32 -> x @ w.T [..., out] through the kernel; w [out, in] from `kernel_weight`."""
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    y = torch.empty(rows.shape[0], w.shape[0])
    kernel()[w.dtype](rows.data_ptr(), w.data_ptr(), y.data_ptr(), rows.shape[0], w.shape[1], w.shape[0],
                      torch.get_num_threads())  # torch's count (OpenMP's own is per calling thread)
    return y.reshape(*x.shape[:-1], w.shape[0])
