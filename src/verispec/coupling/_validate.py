"""Cheap input checks shared by every public function of :mod:`verispec.coupling`.

Each check costs at most one pass over the tensor (``torch.aminmax``) and raises a
``ValueError`` that names the offending argument.
"""

from __future__ import annotations

import torch
from torch import Tensor

DTYPE = torch.float64


def _check_dist(name: str, x, *, min_dim: int = 1, positive: bool = False) -> Tensor:
    """Return ``x`` as a float64 tensor; raise ``ValueError`` naming ``name`` if it is bad.

    Bad means: fewer than ``min_dim`` dimensions, or an entry that is NaN, +-inf or negative
    (or zero when ``positive``). Sums are not checked (callers document that their inputs are
    probability vectors); one ``aminmax`` pass does all the work.
    """
    x = torch.as_tensor(x, dtype=DTYPE)
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimension(s), got shape {tuple(x.shape)}")
    if x.numel() == 0:
        return x
    lo, hi = torch.aminmax(x)
    lo, hi = float(lo), float(hi)
    if lo != lo or hi != hi:
        raise ValueError(f"{name} contains NaN")
    if hi == float("inf") or lo == float("-inf"):
        raise ValueError(f"{name} contains inf")
    if lo < 0 or (positive and lo == 0):
        raise ValueError(f"{name} must be {'positive' if positive else 'non-negative'}, min entry is {lo}")
    return x


def _check_pair(name_a: str, a, name_b: str, b) -> tuple[Tensor, Tensor]:
    """``_check_dist`` both, then raise ``ValueError`` unless they have exactly the same shape."""
    a, b = _check_dist(name_a, a), _check_dist(name_b, b)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {name_a} {tuple(a.shape)} vs {name_b} {tuple(b.shape)}")
    return a, b


def _check_broadcasts_to(name: str, x: Tensor, shape: torch.Size, target: str) -> None:
    """Raise ``ValueError`` unless ``x`` broadcasts to ``shape`` (the shape of ``target``)."""
    try:
        ok = torch.broadcast_shapes(x.shape, shape) == shape
    except RuntimeError:
        ok = False
    if not ok or (x.dim() and x.shape[-1] != shape[-1]):
        raise ValueError(f"shape mismatch: {name} {tuple(x.shape)} does not broadcast to {target} {tuple(shape)}")


def _check_k(name: str, k) -> Tensor:
    """Return ``k`` (int or integer tensor) as a float64 tensor; ``ValueError`` unless integer >= 1."""
    k = torch.as_tensor(k, dtype=DTYPE)
    if k.numel() and not bool(((k >= 1) & (k == torch.round(k))).all()):
        raise ValueError(f"{name} must be an integer >= 1")
    return k
