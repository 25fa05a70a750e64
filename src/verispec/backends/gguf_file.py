"""Cheap validation of GGUF model files before a native loader sees them.

llama.cpp may abort the whole process on a junk file, so every GGUF path is
checked here first: it must exist, be a regular file and start with the magic
bytes ``GGUF``.
"""
from __future__ import annotations

import os

GGUF_MAGIC = b"GGUF"

__all__ = ["GGUF_MAGIC", "is_gguf", "require_gguf"]


def is_gguf(path: str | os.PathLike) -> bool:
    """True when ``path`` is a readable file starting with the GGUF magic."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == GGUF_MAGIC
    except OSError:
        return False


def require_gguf(path: str | os.PathLike) -> str:
    """Return ``path`` as a string, or raise a clear ValueError if it is not a GGUF file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"model file not found: {path!r}")
    if not os.path.isfile(path):
        raise ValueError(f"model path is not a file: {path!r}")
    if not is_gguf(path):
        raise ValueError(f"not a GGUF file (missing 'GGUF' magic bytes): {path!r}")
    return path
