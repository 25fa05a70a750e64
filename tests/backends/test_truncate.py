"""Backend.truncate(n_keep, pending) on both backends: truncate then score == a fresh reset."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from verispec.backends import load_backend  # noqa: E402

PROMPT = [1, 17, 42, 99, 5, 63, 8, 120, 33]
TREE_TOKENS = [10, 20, 30, 40, 50, 60, 70]
TREE_PARENT = [-1, 0, -1, 1, 0, 2, 3]     # three leaves: 6, 4, 5
ATOL = {"torch": 1e-5, "llamacpp": 1e-3}  # see test_torch_backend / test_llamacpp_backend


@pytest.fixture(scope="module", params=["torch", "llamacpp"])
def backend(request):
    if request.param == "torch":
        b = load_backend("torch", request.getfixturevalue("tiny_llama_dir"))
    else:
        b = load_backend("llamacpp", request.getfixturevalue("smollm2_path"), n_ctx=256, n_threads=1)
    b.kind = request.param
    yield b
    if hasattr(b, "close"):
        b.close()


def _tree():
    return torch.tensor(TREE_TOKENS), torch.tensor(TREE_PARENT)


def _fresh_rows(backend, tokens: list[int]) -> torch.Tensor:
    """Rows of the test tree scored after a fresh reset on ``tokens``."""
    backend.reset(tokens)
    return backend.score(*_tree())


def _check(backend, want: torch.Tensor, committed: list[int]) -> None:
    assert backend.n_past == len(committed) and backend.pending == committed[-1]
    got = backend.score(*_tree())
    torch.testing.assert_close(got, want, atol=ATOL[backend.kind], rtol=0)


@pytest.mark.parametrize("n_keep", [0, 4, len(PROMPT), len(PROMPT) + 2, len(PROMPT) + 4])
def test_truncate_after_commits(backend, n_keep):
    chain = [11, 12, 13, 14]
    full = PROMPT + chain + [15]                       # committed: prompt, chain, pending 15
    want = _fresh_rows(backend, full[:n_keep] + [77])
    backend.reset(PROMPT)
    backend.score(torch.tensor(chain), torch.arange(-1, len(chain) - 1))
    backend.commit([0, 1, 2, 3], 15)
    assert backend.n_past == len(full)
    backend.truncate(n_keep, 77)
    _check(backend, want, full[:n_keep] + [77])


@pytest.mark.parametrize("n_keep", [len(PROMPT) - 1, 3])
def test_truncate_drops_an_uncommitted_tree(backend, n_keep):
    want = _fresh_rows(backend, PROMPT[:n_keep] + [77])
    backend.reset(PROMPT)
    backend.score(*_tree())                            # a multi-leaf tree left in the cache
    backend.truncate(n_keep, 77)
    with pytest.raises(ValueError):
        backend.commit([0], 5)                         # the tree is gone with the truncate
    _check(backend, want, PROMPT[:n_keep] + [77])


def test_truncate_after_tree_commit_then_continue(backend):
    backend.reset(PROMPT)
    backend.score(*_tree())
    # the first-child chain: a path that skips nodes leaves llama.cpp cells out of position
    # order, which moves later logits at rounding level (see backends/README.md, Exactness)
    backend.commit([0, 1, 3], 9)
    committed = PROMPT + [TREE_TOKENS[0], TREE_TOKENS[1], TREE_TOKENS[3], 9]
    backend.truncate(len(PROMPT) + 2, 31)
    backend.commit([], 32)                             # evaluates 31
    want_tokens = committed[:len(PROMPT) + 2] + [31, 32]
    got = backend.score(*_tree())
    want = _fresh_rows(backend, want_tokens)
    torch.testing.assert_close(got, want, atol=ATOL[backend.kind], rtol=0)


def test_truncate_errors(backend):
    backend.reset(PROMPT)
    for n_keep in (-1, len(PROMPT), len(PROMPT) + 3):
        with pytest.raises(ValueError):
            backend.truncate(n_keep, 5)
    with pytest.raises(ValueError):
        backend.truncate(2, backend.vocab_size)
    with pytest.raises(ValueError):
        backend.truncate(True, 5)
    assert backend.n_past == len(PROMPT) and backend.pending == PROMPT[-1]   # unchanged


def test_truncate_before_reset(tiny_llama_dir):
    with pytest.raises(RuntimeError):
        load_backend("torch", tiny_llama_dir).truncate(0, 1)
