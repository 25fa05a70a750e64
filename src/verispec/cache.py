"""verispec's on-disk cache folder (measured cost curves, exported model formats, built drafts).

``$VERISPEC_CACHE`` when set, else ``~/.cache/verispec``. Files derived from a model are named by
:func:`file_digest` of its bytes, so every install of one model (each virtualenv has its own copy,
with its own path and mtime) shares one export and one measured cost curve.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

_MEMO = "digests.json"


def cache_dir() -> Path:
    return Path(os.environ.get("VERISPEC_CACHE", Path.home() / ".cache" / "verispec"))


def file_digest(path: str | os.PathLike) -> str:
    """16 hex digits of the sha256 of the file's bytes.

    Hashing a model file takes a fraction of a second, so the digest is memoised in the cache folder
    under (resolved path, size, mtime in ns): a file is read again only when it changes. Memo entries
    of files that no longer exist are dropped when the memo is written. FileNotFoundError if ``path``
    is missing.
    """
    p = Path(path).resolve()
    st = p.stat()
    stamp = f"{p}|{st.st_size}|{st.st_mtime_ns}"
    memo = cache_dir() / _MEMO
    try:
        table = json.loads(memo.read_text())
        if not isinstance(table, dict):
            table = {}
    except (OSError, ValueError):
        table = {}
    if isinstance(table.get(stamp), str):
        return table[stamp]
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    digest = h.hexdigest()[:16]
    table = {k: v for k, v in table.items() if os.path.exists(k.split("|", 1)[0])}
    table[stamp] = digest
    try:  # a temporary name, then a rename: concurrent readers never see half a memo
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_suffix(f".{os.getpid()}.part")
        tmp.write_text(json.dumps(table, indent=0))
        os.replace(tmp, memo)
    except OSError:
        pass  # a read-only cache only costs the hash next time
    return digest
