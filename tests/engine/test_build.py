"""build_engine: the torch dtype, the draft model's backend, the hybrid drafter, and their clear errors."""
from __future__ import annotations

import pytest
import torch

from verispec.backends.torch_hf import resolve_dtype
from verispec.engine.build import EngineConfig, build_engine


def test_dtype_names():
    assert resolve_dtype("float32") is torch.float32 and resolve_dtype("bf16") is torch.bfloat16
    assert resolve_dtype(torch.float16) is torch.float16
    assert resolve_dtype("auto") in (torch.bfloat16, torch.float32)  # bfloat16 only where the CPU has it
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("int3")


def test_dtype_is_for_torch_only():
    with pytest.raises(ValueError, match="torch backend only"):
        build_engine(EngineConfig(backend="llamacpp", dtype="bfloat16"))


def test_hybrid_needs_a_draft_model():
    with pytest.raises(ValueError, match="ngram\\+model needs --draft-model"):
        build_engine(EngineConfig(backend="llamacpp", drafter="ngram+model", model_format="q4_1"))


def test_torch_target_with_a_hybrid_drafter(tiny_llama_dir, tiny_draft_dir):
    from verispec.draft.hybrid import LookupThenModel
    from verispec.sampling import SamplingParams

    eng = build_engine(EngineConfig(backend="torch", model=tiny_llama_dir, dtype="float32", drafter="ngram+model",
                                    draft_model=tiny_draft_dir, n_threads=1))
    assert isinstance(eng.drafter, LookupThenModel) and eng.backend.dtype is torch.float32
    assert eng.drafter.fallback.backend.name.startswith("torch:")  # a directory draft runs on torch
    out = eng.generate("w40 w41 w42 w43 w40 w41 w42", SamplingParams(0.0), 8, chat=False)
    assert len(out.tokens) == 8


@pytest.mark.parametrize("kw", [{"gamma": "auto"}, {"gamma": 0}, {"gamma": 2.5}, {"max_gamma": 0}, {"max_gamma": "8"}])
def test_a_draft_length_that_is_not_a_positive_int_is_refused(kw):
    """Before any model loads: a clear ValueError, not a TypeError from a comparison (gamma="auto" is the CLI's
    spelling of None)."""
    with pytest.raises(ValueError, match="gamma must be an int >= 1"):
        build_engine(EngineConfig(**kw))
