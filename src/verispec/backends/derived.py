"""Draft models derived from a target GGUF (re-quantized, truncated, layer-skipped): no training, reproducible.

A drafter that is *too* good (the same weights re-quantized: 1 - TV ~ 0.95 per token) hides the
differences between verification rules; one that is too poor (acceptance ~ 0.1) hides them too.
A **truncated-layer copy** sits in between and needs no training: the first L of the target's
transformer blocks, then the target's own final norm and (tied) output head, every tensor
byte-identical to the target's (same quantization), with ``<arch>.block_count = L``. This is
the "early exit" draft of LayerSkip / Draft & Verify (Elhoushi et al. 2024; Zhang et al. 2023)
written as a separate GGUF, so it runs on llama.cpp like any other small draft model.

    path = truncated_gguf(default_model_path(), layers=20)   # cached under ~/.cache/verispec/
    EngineConfig(drafter="model", draft_model=path, ...)

``verispec generate --drafter model --draft-model q4_0`` and ``verispec bench --draft-model truncL`` build
them on demand (``resolve_draft_model``).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..cache import cache_dir, file_digest
from ..checks import int_at_least
from .registry import convert_gguf, default_model_path


def truncated_gguf(src: str | os.PathLike, layers: int, dst: str | os.PathLike | None = None) -> str:
    """The first ``layers`` blocks of ``src`` (see :func:`layer_subset_gguf`)."""
    if not int_at_least(layers, 1):
        raise ValueError(f"layers must be an int >= 1, got {layers!r}")
    return layer_subset_gguf(src, list(range(layers)), dst, tag=f"trunc{layers}")


def skipped_gguf(src: str | os.PathLike, first: int, last: int, dst: str | os.PathLike | None = None) -> str:
    """``src`` without the blocks ``first..last`` (inclusive): the layer-skipping self-draft of
    Draft & Verify (Zhang et al. 2023, arXiv 2309.08168), as its own GGUF."""
    total = _block_count(src)
    if not (0 <= first <= last < total):
        raise ValueError(f"need 0 <= first <= last < {total} blocks, got {first}..{last}")
    keep = [i for i in range(total) if not first <= i <= last]
    return layer_subset_gguf(src, keep, dst, tag=f"skip{first}-{last}")


def _block_count(src) -> int:
    from .gguf_file import GGUFTensors

    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"GGUF not found: {src}")
    meta = GGUFTensors(src).meta  # its metadata only: gguf.GGUFReader would parse the tokenizer's arrays too
    return int(meta[f"{meta['general.architecture']}.block_count"])


def layer_subset_gguf(src: str | os.PathLike, keep: list[int], dst: str | os.PathLike | None = None,
                      tag: str = "subset") -> str:
    """Write (once) and return a GGUF holding the blocks ``keep`` of ``src``, renumbered 0..len(keep)-1.

    Everything else (embeddings, final norm, output head, tokenizer, chat template) is copied
    unchanged, quantized data included, and ``<arch>.block_count`` is set to ``len(keep)``.
    ``dst`` defaults to ``<cache>/<stem>-<hash>-<tag>.gguf``. ValueError for an empty, unsorted
    or out-of-range ``keep``; FileNotFoundError if ``src`` is missing.
    """
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"GGUF not found: {src}")
    if dst is None:
        dst = cache_dir() / f"{src.stem}-{file_digest(src)}-{tag}.gguf"
    dst = Path(dst)
    if dst.is_file():
        return str(dst)
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    reader = GGUFReader(str(src))
    arch = reader.fields["general.architecture"].contents()
    key = f"{arch}.block_count"
    if key not in reader.fields:
        raise ValueError(f"{src} has no {key} field: not a decoder GGUF this builder knows")
    total = int(reader.fields[key].contents())
    if not keep or sorted(set(keep)) != list(keep) or keep[0] < 0 or keep[-1] >= total or len(keep) == total:
        raise ValueError(f"keep must be a proper, sorted, non-empty subset of the {total} blocks, got {keep}")
    new_id = {old: new for new, old in enumerate(keep)}
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".part")
    writer = GGUFWriter(str(tmp), arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        value = len(keep) if name == key else field.contents()
        if name == "general.name":
            value = f"{value} ({tag}: {len(keep)} of {total} blocks)"
        vtype = field.types[0]
        writer.add_key_value(name, value, vtype, sub_type=field.types[-1] if vtype == GGUFValueType.ARRAY else None)
    block = re.compile(r"blk\.(\d+)\.")
    for t in reader.tensors:
        name = t.name
        m = block.match(name)
        if m:
            if int(m.group(1)) not in new_id:
                continue
            name = f"blk.{new_id[int(m.group(1))]}.{name[m.end():]}"
        # t.data is [rows, bytes per row] uint8 for quantized types: the writer converts the byte shape
        writer.add_tensor(name, t.data, raw_shape=t.data.shape, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, dst)
    return str(dst)


def requantized_gguf(src: str | os.PathLike, qtype: str = "q4_0", dst: str | os.PathLike | None = None,
                     n_threads: int = 1) -> str:
    """Write (once) and return ``src`` re-quantized to ``qtype`` (e.g. ``q4_0``, ``q2_k``) by llama.cpp.

    llama.cpp dequantizes the source tensors and quantizes them again (``allow_requantize``), so a
    Q4_1 target gives a Q4_0 copy carrying both rounding errors: the same architecture, a
    noticeably different next-token law (1 - TV ~ 0.7 per token at temperature 1 for SmolLM2-135M).
    ValueError for an unknown ``qtype``; FileNotFoundError if ``src`` is missing.
    """
    return convert_gguf(src, qtype, dst, n_threads)


def resolve_draft_model(spec: str | None, target: str | None) -> str | None:
    """A draft-model spec -> a path, building derived copies of the ``target`` GGUF on first use.

    ``truncL`` the first L blocks; ``skipA-B`` without blocks A..B; ``q4_0`` / ``q2_k`` / ... the
    target re-quantized; anything else is a path (GGUF file or Hugging Face directory) used as given.
    """
    if spec is None:
        return None
    m = re.fullmatch(r"trunc(\d+)", spec)
    if m:
        return truncated_gguf(target or default_model_path(), int(m.group(1)))
    m = re.fullmatch(r"(q\d\w*|f16|bf16)", spec.lower())
    if m:
        return requantized_gguf(target or default_model_path(), m.group(1))
    m = re.fullmatch(r"skip(\d+)-(\d+)", spec)
    if m:
        return skipped_gguf(target or default_model_path(), int(m.group(1)), int(m.group(2)))
    if not Path(spec).exists():
        raise FileNotFoundError(f"draft model not found: {spec} (or a spec: truncL, skipA-B, q4_0, ...)")
    return spec
