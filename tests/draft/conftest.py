"""Fixtures: one TorchBackend on the tiny Llama (tests/conftest.py), shared by the draft tests."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_backend(tiny_llama_dir):
    """A TorchBackend on the tiny Llama, shared by the draft tests (drafters reset it as needed)."""
    from verispec.backends import load_backend

    return load_backend("torch", tiny_llama_dir)
