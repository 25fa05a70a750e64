"""verispec's small C helpers, compiled on first use with the system's C compiler into the cache folder.

Each helper is one C file beside its Python module (`backends/skinny.c`, `backends/attend.c`, `draw.c`). `load`
builds it once per source and flags (``kernels/<name>-<digest>.so``, ~1 s), atomically, so concurrent first uses
never see a half-written library, and loads it; `try_load` does that or says why not. Where something is missing
(not x86-64 Linux, no AVX2, no compiler, or ``VERISPEC_NO_KERNEL=1`` for A/B runs) `unavailable` says why and
callers keep their torch paths.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

__all__ = ["compiler", "gomp_loaded", "load", "try_load", "unavailable"]


def compiler() -> str | None:
    """``$CC``, else ``cc`` or ``gcc`` on the PATH."""
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def unavailable() -> str:
    """Why no helper can be built or used here ("" when they can): what every helper needs (x86-64 Linux, AVX2
    and FMA as torch's CPU capability reports them, a C compiler, VERISPEC_NO_KERNEL unset)."""
    if os.environ.get("VERISPEC_NO_KERNEL", "") not in ("", "0"):
        return "VERISPEC_NO_KERNEL is set"
    if not sys.platform.startswith("linux") or platform.machine().lower() not in ("x86_64", "amd64"):
        return f"not an x86-64 Linux ({sys.platform}, {platform.machine()})"
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return f"no AVX2 (torch's CPU capability: {torch.backends.cpu.get_cpu_capability()})"
    if compiler() is None:
        return "no C compiler (cc, gcc or $CC)"
    return ""


def gomp_loaded() -> bool:
    """Whether GNU OpenMP is loaded in this process (torch's thread pool, which a helper built with -fopenmp
    then shares)."""
    try:
        with open("/proc/self/maps") as maps:
            return any("libgomp" in line for line in maps)
    except OSError:
        return False


def try_load(source: Path, flags: tuple[str, ...], why: str = "") -> tuple[ctypes.CDLL | None, str]:
    """(`load`'s library, "") or (None, why not): `unavailable()`, else a caller's own reason `why`, else the
    build's or the loader's error."""
    why = unavailable() or why
    if why:
        return None, why
    try:
        return load(source, flags), ""
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        return None, f"could not build or load {source.stem}: {e}"


def load(source: Path, flags: tuple[str, ...]) -> ctypes.CDLL:
    """The library built from `source` with `flags` (compiler flags, then libraries to link), built into the
    cache folder if it is not there yet. RuntimeError if the compiler fails, OSError if the library does not
    load."""
    from .cache import cache_dir

    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler (cc, gcc or $CC)")
    digest = hashlib.sha256(source.read_bytes() + " ".join((cc, *flags)).encode()).hexdigest()[:16]
    path = cache_dir() / "kernels" / f"{source.stem}-{digest}.so"
    if not path.exists():
        _build(cc, source, flags, path)
    return ctypes.CDLL(str(path))


def _build(cc: str, source: Path, flags: tuple[str, ...], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        libs = [f for f in flags if f.startswith("-l")]  # after the source: the linker reads left to right
        opts = [f for f in flags if not f.startswith("-l")]
        run = subprocess.run([cc, *opts, str(source), "-o", tmp, *libs], capture_output=True, text=True,
                             timeout=120)
        if run.returncode:
            raise RuntimeError(f"{cc} failed: {run.stderr.strip()[-300:]}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
