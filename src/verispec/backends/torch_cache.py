"""KV-cache rollback on transformers' ``DynamicCache`` (transformers >= 5).

A ``DynamicCache()`` built without a config holds one ``DynamicLayer`` per
decoder layer, each with ``keys`` / ``values`` tensors [B, H_kv, S, D] that the
model extends by concatenation.  Rolling back is therefore plain slicing on the
sequence dimension, and keeping a non-contiguous set of rows is an
``index_select`` on that dimension.
"""
from __future__ import annotations

import torch
from transformers import DynamicCache

__all__ = ["new_cache", "cache_length", "truncate", "keep_rows"]


def new_cache() -> DynamicCache:
    """An empty cache of full-attention layers (no sliding-window eviction)."""
    return DynamicCache()


def _layers(cache: DynamicCache):
    for layer in cache.layers:
        if getattr(layer, "is_sliding", False):
            raise NotImplementedError("sliding-window cache layers cannot be rolled back")
        if getattr(layer, "is_initialized", True) and layer.keys is not None and layer.keys.numel():
            yield layer


def cache_length(cache: DynamicCache) -> int:
    """Number of cached positions S."""
    return cache.get_seq_length()


def truncate(cache: DynamicCache, length: int) -> None:
    """Keep the first ``length`` positions of every layer."""
    for layer in _layers(cache):
        if layer.keys.shape[-2] > length:
            layer.keys = layer.keys[..., :length, :]
            layer.values = layer.values[..., :length, :]


def keep_rows(cache: DynamicCache, start: int, rows: torch.Tensor) -> None:
    """Replace positions ``start:`` by the rows ``rows`` (LongTensor [K], absolute indices >= start).

    Used by commit: ``start`` is just past pending, ``rows`` are the accepted
    tree nodes' cache rows; the result has ``start + K`` positions.
    """
    if rows.numel() == 0:
        truncate(cache, start)
        return
    contiguous = bool((rows == torch.arange(start, start + rows.numel())).all())
    if contiguous:
        truncate(cache, start + rows.numel())
        return
    end = start + rows.numel()
    for layer in _layers(cache):
        # rows are >= start, so the gathered copy is taken before anything is overwritten
        layer.keys[..., start:end, :] = layer.keys.index_select(-2, rows)
        layer.values[..., start:end, :] = layer.values.index_select(-2, rows)
    truncate(cache, end)
