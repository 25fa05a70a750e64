"""Cheap validation of GGUF model files before a native loader sees them.

llama.cpp may abort the whole process on a junk file, so every GGUF path is
checked here first: it must exist, be a regular file and start with the magic
bytes ``GGUF``.
"""
from __future__ import annotations

import os

GGUF_MAGIC = b"GGUF"

__all__ = ["GGML_BF16", "GGML_F16", "GGML_F32", "GGUFTensors", "GGUF_MAGIC", "is_gguf", "require_gguf"]


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


# ---------------------------------------------------------------------------------------------- reading
# GGUF v2/v3 layout (ggml's gguf.h): magic, u32 version, u64 n_tensors, u64 n_kv; n_kv (key, u32 type, value);
# n_tensors (name, u32 n_dims, u64 dims[n_dims], u32 ggml type, u64 offset); the data after padding to
# `general.alignment` (default 32). Strings are u64 length + UTF-8 bytes.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
GGML_F32, GGML_F16, GGML_BF16 = 0, 1, 30


class GGUFTensors:
    """The metadata and the tensor table of a GGUF file, with its tensors as zero-copy numpy views.

    Only what a forward pass needs is decoded: scalar and string metadata (arrays, such as the tokenizer's
    vocabulary, are skipped), and tensor names, shapes, types and offsets. Unlike ``gguf.GGUFReader``,
    which builds a numpy view per metadata element (~2.4 s for SmolLM2's tokenizer), this takes ~0.1 s.

        g = GGUFTensors(path); g.meta["llama.block_count"]; g.tensor("blk.0.attn_q.weight")  # numpy, ggml dims reversed
    """

    def __init__(self, path: str | os.PathLike) -> None:
        import struct

        try:
            self._parse(require_gguf(path))
        except (struct.error, UnicodeDecodeError, OverflowError) as e:
            raise ValueError(f"malformed GGUF {path!r}: {e}") from None

    def _parse(self, path: str) -> None:
        import mmap
        import struct

        with open(path, "rb") as fh:
            self._buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        b, off = self._buf, 4
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", b, off)
        off += 20
        if version < 2:
            raise ValueError(f"GGUF version {version} is not supported (need 2 or 3): {path!r}")

        def string(o):
            n = struct.unpack_from("<Q", b, o)[0]
            return bytes(b[o + 8:o + 8 + n]).decode("utf-8", "replace"), o + 8 + n

        def value(kind, o):
            if kind in _SCALARS:
                fmt = _SCALARS[kind]
                return struct.unpack_from(fmt, b, o)[0], o + struct.calcsize(fmt)
            if kind == _STRING:
                return string(o)
            if kind == _ARRAY:
                sub, n = struct.unpack_from("<IQ", b, o)
                o += 12
                if sub in _SCALARS:  # skipped: a forward needs no arrays
                    return None, o + n * struct.calcsize(_SCALARS[sub])
                for _ in range(n):
                    o = value(sub, o)[1]
                return None, o
            raise ValueError(f"unknown GGUF metadata type {kind} in {path!r}")

        self.meta: dict = {}
        for _ in range(n_kv):
            key, off = string(off)
            kind = struct.unpack_from("<I", b, off)[0]
            self.meta[key], off = value(kind, off + 4)
        infos = []
        for _ in range(n_tensors):
            name, off = string(off)
            n_dims = struct.unpack_from("<I", b, off)[0]
            dims = struct.unpack_from(f"<{n_dims}Q", b, off + 4)
            kind, rel = struct.unpack_from("<IQ", b, off + 4 + 8 * n_dims)
            off += 4 + 8 * n_dims + 12
            infos.append((name, dims, kind, rel))
        align = int(self.meta.get("general.alignment") or 32)
        start = -(-off // align) * align
        self.types = {name: kind for name, _, kind, _ in infos}
        self._where = {name: (dims, kind, start + rel) for name, dims, kind, rel in infos}
        self.path = path

    def tensor(self, name: str):
        """Tensor ``name`` as a read-only numpy array, dims in row-major order (ggml's reversed): float32 for F32,
        float16 for F16, uint16 bit patterns for BF16. KeyError if absent, ValueError for a quantized type."""
        import numpy as np

        dims, kind, at = self._where[name]
        dtype = {GGML_F32: np.float32, GGML_F16: np.float16, GGML_BF16: np.uint16}.get(kind)
        if dtype is None:
            raise ValueError(f"tensor {name!r} is quantized (ggml type {kind}); only F32, F16 and BF16 are read")
        count = 1
        for d in dims:
            count *= d
        return np.frombuffer(self._buf, dtype=dtype, count=count, offset=at).reshape(tuple(reversed(dims)))
