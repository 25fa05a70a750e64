"""Fixtures shared by the llama.cpp backend's test modules."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def llamacpp_q4(smollm2_path):
    """The shipped Q4_1 SmolLM2 on llama.cpp, one per module. One thread: with two, a busy neighbour process can
    stall llama.cpp's spinning thread pool for seconds per step on a 2-core machine. Flash attention on, whichever
    path is cheaper here: the bitwise contract the tests demand is its; llama.cpp's other attention path rounds a
    batch apart from a row (up to ~1 in a Q4_1 logit on an AVX-512 Xeon, docs/speed.md §31)."""
    from verispec.backends import load_backend

    b = load_backend("llamacpp", smollm2_path, n_ctx=512, n_threads=1, flash_attn=True)
    yield b
    b.close()
