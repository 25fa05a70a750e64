"""Files derived from a model are keyed by its bytes: reinstalls share them, edits do not."""
import json
import os

import pytest

from verispec import cache


@pytest.fixture
def cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("VERISPEC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_digest_follows_the_bytes_not_the_path_or_mtime(tmp_path, cache_folder):
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    a.write_bytes(b"weights" * 1000)
    b.write_bytes(b"weights" * 1000)
    os.utime(b, (1_000_000, 1_000_000))
    assert cache.file_digest(a) == cache.file_digest(b)  # another install of the same file
    b.write_bytes(b"weights" * 999 + b"weightS")  # same size, one byte changed
    assert cache.file_digest(a) != cache.file_digest(b)


def test_digest_is_memoised_and_refreshed_when_the_file_changes(tmp_path, cache_folder, monkeypatch):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"x" * 100)
    first = cache.file_digest(f)
    memo = json.loads((cache_folder / "digests.json").read_text())
    assert list(memo.values()) == [first]
    calls = []
    real = cache.hashlib.sha256
    monkeypatch.setattr(cache.hashlib, "sha256", lambda: calls.append(1) or real())
    assert cache.file_digest(f) == first and calls == []  # from the memo
    f.write_bytes(b"y" * 100)
    os.utime(f, ns=(f.stat().st_mtime_ns + 10**9,) * 2)
    assert cache.file_digest(f) != first and calls == [1]  # changed: read again


def test_memo_drops_vanished_files_and_survives_a_corrupt_memo(tmp_path, cache_folder):
    gone, kept = tmp_path / "gone.gguf", tmp_path / "kept.gguf"
    gone.write_bytes(b"1")
    kept.write_bytes(b"2")
    cache.file_digest(gone)
    gone.unlink()
    cache.file_digest(kept)
    memo = json.loads((cache_folder / "digests.json").read_text())
    assert [k.split("|")[0] for k in memo] == [str(kept.resolve())]
    (cache_folder / "digests.json").write_text("not json")
    assert cache.file_digest(kept) == list(memo.values())[0]
    with pytest.raises(FileNotFoundError):
        cache.file_digest(tmp_path / "missing.gguf")
