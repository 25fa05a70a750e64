"""Causal attention over a whole prompt for the torch prefill (`llamacpp_prefill`): a flash-attention kernel in C
(`attend.c`), compiled on first use, where the CPU has AVX-512.

Why: on 2 cores of a Zen 5 EPYC torch's CPU flash kernel (`scaled_dot_product_attention`) took 13.5 ms a layer at
926 tokens and 18.8 at 1,187 (9 query heads, 3 key/value heads of 64 dims), half of the llama.cpp backend's torch
prefill of a summarization prompt. This kernel takes 5.4 and 8.1 ms for the same attention; on a Zen 4 EPYC, whose
AVX-512 runs in two 256-bit halves, 8.1 and 13.5 ms against torch's 12.8 and 18.8 (docs/speed.md §34):
blocks of 64 queries against 64 keys in register tiles of 16-lane vectors, the float16 keys and values widened once
for the query heads that share them. Built for AVX2 alone it is no faster than torch's, so there it is not used.

Numbers: float32 throughout over the float16 keys and values, as torch's path computes it from their float32 copies;
the two differ by float32 rounding (~4e-6 at 1,187 tokens for unit-scale values).

When: head dimension 64, an x86-64 Linux CPU whose torch capability is AVX512 (AVX-512 F), torch's threads on GNU
OpenMP, a C compiler; checked against torch on a small problem (partial blocks, grouped heads) before first use.
Else `kernel()` is None, `why_not()` says why, and `causal` returns None (the caller keeps torch's attention).
``VERISPEC_NO_KERNEL=1`` turns it off.
"""
from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch
import torch.nn.functional as F

from ..native import gomp_loaded, try_load

__all__ = ["HEAD_DIM", "attention", "causal", "kernel", "reference", "why_not"]

HEAD_DIM = 64  # the one head size the kernel is built for
SOURCE = Path(__file__).with_name("attend.c")
FLAGS = ("-O3", "-mavx2", "-mfma", "-mf16c", "-mavx512f", "-fopenmp", "-shared", "-fPIC", "-lm")
_why = ""


def why_not() -> str:
    """Why `kernel()` is None ("" when it is not, or before the first call)."""
    return _why


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """torch's attention on the same inputs as `causal` (q float32 [T, H, D], k, v [T, Hk, D]) -> [T, H, D]."""
    H, Hk = q.shape[1], k.shape[1]
    o = F.scaled_dot_product_attention(q.transpose(0, 1)[None], k.float().transpose(0, 1)[None],
                                       v.float().transpose(0, 1)[None], is_causal=True, enable_gqa=H != Hk)
    return o[0].transpose(0, 1)


@functools.lru_cache(maxsize=1)
def kernel():
    """The compiled ``attend_causal(q, k, v, o, T, H, Hk, D, threads) -> int`` (ctypes), or None."""
    global _why
    cap = torch.backends.cpu.get_cpu_capability()
    why = (f"no AVX-512 (torch's CPU capability: {cap})" if cap != "AVX512" else
           "" if gomp_loaded() else "torch does not run its threads on GNU OpenMP here")
    lib, _why = try_load(SOURCE, FLAGS, why)
    fn = getattr(lib, "attend_causal", None)
    if fn is None:
        _why = _why or f"{SOURCE.stem} lacks attend_causal"
        return None
    fn.restype, fn.argtypes = ctypes.c_int, [ctypes.c_void_p] * 4 + [ctypes.c_long] + [ctypes.c_int] * 4
    gen = torch.Generator().manual_seed(0)
    T, H, Hk = 150, 6, 2  # a partial last block, 3 query heads to a key/value head
    q = torch.randn(T, H, HEAD_DIM, generator=gen) * 3
    k, v = (torch.randn(T, Hk, HEAD_DIM, generator=gen).half() for _ in range(2))
    o = torch.empty(T, H, HEAD_DIM)
    if fn(q.data_ptr(), k.data_ptr(), v.data_ptr(), o.data_ptr(), T, H, Hk, HEAD_DIM, 1) != 0 or \
            not torch.allclose(o, reference(q, k, v), rtol=1e-4, atol=1e-5):
        _why = f"{SOURCE.stem} computed a wrong attention in its self-check"
        return None
    return fn


def causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor | None:
    """softmax(q k^T / sqrt(D) + causal mask) v for q float32 [T, H, D] and k, v float16 [T, Hk, D] (query head h
    reads key/value head h // (H / Hk)) -> float32 [T, H, D]; None where the kernel does not apply (no kernel, D is
    not 64, H not a multiple of Hk, other dtypes)."""
    T, H, D = q.shape
    Hk = k.shape[1]
    if (D != HEAD_DIM or H % Hk or q.dtype != torch.float32 or k.dtype != torch.float16 or v.dtype != torch.float16
            or k.shape != (T, Hk, D) or v.shape != k.shape):
        return None
    fn = kernel()
    if fn is None:
        return None
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    o = torch.empty(T, H, D)
    fn(q.data_ptr(), k.data_ptr(), v.data_ptr(), o.data_ptr(), T, H, Hk, D, torch.get_num_threads())
    return o


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`causal` where the kernel applies, else `reference`: [T, H, D]."""
    o = causal(q, k, v)
    return reference(q, k, v) if o is None else o
