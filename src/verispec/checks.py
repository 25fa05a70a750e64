"""Argument checks shared across layers (bad input gets a clear ValueError from the caller, never a TypeError)."""
from __future__ import annotations


def int_at_least(x, low: int | None = None) -> bool:
    """Whether x is an int, not a bool (``True`` is an int to Python, never a count here), and at least `low`
    (None: any int)."""
    return isinstance(x, int) and not isinstance(x, bool) and (low is None or x >= low)
