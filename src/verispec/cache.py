"""verispec's on-disk cache folder (measured cost curves, exported model formats, built drafts).

``$VERISPEC_CACHE`` when set, else ``~/.cache/verispec``.
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("VERISPEC_CACHE", Path.home() / ".cache" / "verispec"))
