"""Draft-model builders: a layer-subset GGUF is a valid, smaller model with the target's vocabulary."""
from __future__ import annotations

import pytest

from verispec.backends.derived import resolve_draft_model, truncated_gguf


def test_truncated_copy_loads_and_drafts(smollm2_path, tmp_path):
    from gguf import GGUFReader

    from verispec.backends import load_backend
    from verispec.draft.model import ModelDrafter

    path = truncated_gguf(smollm2_path, 2, tmp_path / "t2.gguf")
    assert truncated_gguf(smollm2_path, 2, tmp_path / "t2.gguf") == path  # cached: not rewritten
    r = GGUFReader(path)
    assert int(r.fields["llama.block_count"].contents()) == 2
    assert not any(t.name.startswith("blk.2.") for t in r.tensors)
    target = load_backend("llamacpp", smollm2_path, n_ctx=64, n_threads=1)
    draft = load_backend("llamacpp", path, n_ctx=64, n_threads=1)
    ModelDrafter(draft, target)  # same vocabulary
    draft.reset([1, 2, 3])
    assert draft.score().shape == (1, target.vocab_size)
    draft.close()
    target.close()


def test_bad_specs(smollm2_path, tmp_path):
    with pytest.raises(ValueError, match="layers"):
        truncated_gguf(smollm2_path, 0)
    with pytest.raises(FileNotFoundError):
        truncated_gguf(tmp_path / "missing.gguf", 2)
    with pytest.raises(FileNotFoundError, match="draft model not found"):
        resolve_draft_model(str(tmp_path / "nope"), smollm2_path)
