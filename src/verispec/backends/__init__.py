"""Target-model backends: score a draft tree in one forward pass, commit / roll back.

``Backend`` (``base.py``) is the contract; ``LlamaCppBackend`` (``llamacpp.py``,
GGUF via llama-cpp-python) and ``TorchBackend`` (``torch_hf.py``, any Hugging
Face causal LM) implement it.  The heavy libraries are imported only when a
backend of that kind is built.
"""
from .base import Backend, Tokenizer
from .registry import BACKEND_KINDS, default_model_path, load_backend
from .tree import TreeLayout, make_layout

__all__ = [
    "BACKEND_KINDS",
    "Backend",
    "Tokenizer",
    "TreeLayout",
    "default_model_path",
    "load_backend",
    "make_layout",
]
