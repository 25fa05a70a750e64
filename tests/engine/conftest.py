"""Fixtures: the tiny random-init Llama of tests/backends (the target), a second one with other
weights and the same tokenizer (a draft model), and the embedded SmolLM2 GGUF."""
from __future__ import annotations

import importlib.util
import pathlib

import pytest

_spec = importlib.util.spec_from_file_location(
    "_backend_fixtures", pathlib.Path(__file__).parents[1] / "backends" / "conftest.py")
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)

tiny_llama_dir = _fixtures.tiny_llama_dir
smollm2_path = _fixtures.smollm2_path
TINY_VOCAB = _fixtures.TINY_VOCAB


def save_llama(folder: str, seed: int, vocab: int = TINY_VOCAB, hidden: int = 64, layers: int = 2,
               init: float = 0.2, head_scale: float = 1.0, head_noise: float = 0.0) -> str:
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, initializer_range=init,
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # a related draft model: the same weights with a sharper, noisier head
        w = model.lm_head.weight
        w.mul_(head_scale).add_(head_noise * w.std() * torch.randn(w.shape, generator=torch.Generator().manual_seed(99)))
    model.save_pretrained(folder)
    _fixtures._save_tiny_tokenizer(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_draft_dir(tmp_path_factory) -> str:
    """Another tiny Llama (other seed, same vocabulary and tokenizer): an imperfect draft model."""
    return save_llama(str(tmp_path_factory.mktemp("tiny_draft")), seed=1)


@pytest.fixture(scope="session")
def flat_target_dir(tmp_path_factory) -> str:
    """A tiny Llama with soft (high-entropy) next-token laws, for the sampled law tests."""
    return save_llama(str(tmp_path_factory.mktemp("flat_target")), seed=2, init=0.03)


@pytest.fixture(scope="session")
def flat_draft_dir(tmp_path_factory) -> str:
    """The flat target with a sharper, perturbed output head: a draft that is often, not always, right."""
    return save_llama(str(tmp_path_factory.mktemp("flat_draft")), seed=2, init=0.03, head_scale=1.5, head_noise=0.5)


@pytest.fixture(scope="session")
def make_llama():
    """The tiny-Llama factory itself, for tests that need a model of their own."""
    return save_llama
