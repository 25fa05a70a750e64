"""TorchBackend on a tiny random-init Llama loaded through from_pretrained."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from backend_checks import (  # noqa: E402
    chain_rows, plain_greedy, root_path, sequential_rows, speculative_greedy)

from verispec.backends import load_backend  # noqa: E402

ATOL = 1e-5
PROMPT = [1, 17, 42, 99, 5, 63, 8, 120, 33]


@pytest.fixture(scope="module")
def backend(tiny_llama_dir):
    return load_backend("torch", tiny_llama_dir)


@pytest.fixture(scope="module")
def fresh(tiny_llama_dir):
    """A second instance, to compare against a fresh reset."""
    return load_backend("torch", tiny_llama_dir)


# a tree whose branches interleave in index order:
#   pending -> 0 -> 1 -> 3 -> 6
#                 \-> 4
#           -> 2 -> 5
TREE_PARENT = [-1, 0, -1, 1, 0, 2, 3]
TREE_TOKENS = [10, 20, 30, 40, 50, 60, 70]


def test_properties(backend):
    assert backend.vocab_size == 128
    assert backend.n_ctx == 256
    assert backend.name.startswith("torch:")


def test_tree_rows_equal_sequential_paths(backend):
    backend.reset(PROMPT)
    logits = backend.score(torch.tensor(TREE_TOKENS), torch.tensor(TREE_PARENT))
    assert logits.shape == (len(TREE_TOKENS) + 1, 128) and logits.dtype == torch.float32
    for node in range(len(TREE_TOKENS)):
        path = [TREE_TOKENS[i] for i in root_path(TREE_PARENT, node)]
        seq = sequential_rows(backend, PROMPT, path)
        torch.testing.assert_close(logits[node + 1], seq[-1], atol=ATOL, rtol=0)
    torch.testing.assert_close(logits[0], seq[0], atol=ATOL, rtol=0)


def test_score_leaves_state_unchanged(backend):
    backend.reset(PROMPT)
    a = backend.score(torch.tensor(TREE_TOKENS), torch.tensor(TREE_PARENT))
    backend.score(torch.tensor([3, 4]), torch.tensor([-1, -1]))
    b = backend.score(torch.tensor(TREE_TOKENS), torch.tensor(TREE_PARENT))
    assert torch.equal(a, b)
    assert backend.n_past == len(PROMPT)


@pytest.mark.parametrize("path", [[0, 1, 3, 6], [2, 5], [0, 4], []])
def test_commit_in_tree_equals_fresh_reset(backend, fresh, path):
    backend.reset(PROMPT)
    backend.score(torch.tensor(TREE_TOKENS), torch.tensor(TREE_PARENT))
    backend.commit(path, 77)
    assert backend.n_past == len(PROMPT) + len(path) + 1
    cont = torch.tensor([12, 13, 14])
    got = backend.score(cont, torch.tensor([-1, 0, 1]))
    full = PROMPT + [TREE_TOKENS[i] for i in path] + [77]
    fresh.reset(full)
    want = fresh.score(cont, torch.tensor([-1, 0, 1]))
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_chain_equals_plain_steps(backend):
    tokens, rows = plain_greedy(backend, PROMPT, 10)
    chain = chain_rows(backend, PROMPT, tokens[:9])
    torch.testing.assert_close(chain, rows, atol=ATOL, rtol=0)
    assert torch.equal(chain.argmax(-1), rows.argmax(-1))


def test_greedy_equals_generate(backend):
    steps = 24
    model = backend.model
    with torch.inference_mode():
        gen = model.generate(torch.tensor([PROMPT]), max_new_tokens=steps, do_sample=False,
                             eos_token_id=None, pad_token_id=0)
    want = gen[0, len(PROMPT):].tolist()
    got, _ = plain_greedy(backend, PROMPT, len(want))
    assert got == want


def test_speculative_greedy_equals_plain(backend):
    oracle, _ = plain_greedy(backend, PROMPT, 40)
    got = speculative_greedy(backend, PROMPT, 30, oracle, seed=1)
    assert got == oracle[:30]


def test_hidden_states(backend):
    backend.reset(PROMPT)
    logits, hidden = backend.score(torch.tensor([4, 5]), torch.tensor([-1, 0]), return_hidden=True)
    assert hidden.shape == (3, 64) and logits.shape == (3, 128)
    head = backend.model.get_output_embeddings()
    with torch.inference_mode():
        torch.testing.assert_close(head(hidden), logits, atol=ATOL, rtol=0)


def test_tokenizer(backend):
    tok = backend.tokenizer
    ids = tok.encode("hello world w40")
    assert ids == [6, 7, 40]
    assert tok.decode(ids) == "hello world w40"
    chat = tok.apply_chat_template([{"role": "user", "content": "hello"}])
    assert chat == [1, 4, 6, 2, 1, 5]
    assert 2 in tok.eos_token_ids


def test_errors(backend, tmp_path):
    with pytest.raises(ValueError):
        backend.reset([])
    with pytest.raises(ValueError):
        backend.reset([1] * (backend.n_ctx + 1))
    backend.reset(PROMPT)
    with pytest.raises(ValueError):
        backend.score(torch.tensor([1, 2]), torch.tensor([-1, 1]))   # parent not before child
    backend.score(torch.tensor(TREE_TOKENS), torch.tensor(TREE_PARENT))
    with pytest.raises(ValueError):
        backend.commit([0, 2], 5)                                   # not a chain
    with pytest.raises(ValueError):
        load_backend("torch", str(tmp_path / "missing"))
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="GGUF"):
        load_backend("torch", str(junk))


def test_commit_without_score_appends(backend, fresh):
    backend.reset(PROMPT)
    backend.commit([], 5)                                           # pending evaluated on the fly
    with pytest.raises(ValueError):
        backend.commit([0], 6)                                      # no tree to pick from
    fresh.reset(PROMPT + [5])
    torch.testing.assert_close(backend.score(), fresh.score(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_score_argmax_and_score_next_read_a_kept_buffer(tiny_llama_dir, dtype):
    """`score_argmax` copies the rows into a buffer kept between passes and takes numpy's argmax: the indices of
    `score`'s rows (first among ties), the same state change; `score_next` is a view of that buffer with `score`'s
    row, which the next pass overwrites (as llama.cpp's is)."""
    be, ref = (load_backend("torch", tiny_llama_dir, dtype=dtype) for _ in range(2))
    for b in (be, ref):
        b.reset(PROMPT)
    tokens, parent = torch.tensor(TREE_TOKENS), torch.tensor(TREE_PARENT)
    rows = ref.score(tokens, parent)
    best = be.score_argmax(tokens, parent)
    assert best.dtype == torch.int64 and torch.equal(best, rows.argmax(-1))
    for b in (be, ref):
        b.commit([0, 1], 7)
    view = be.score_next()
    assert torch.equal(view, ref.score()[0])
    ref.commit([], 3)
    be.commit([], 3)
    after = be.score_next().clone()
    assert torch.equal(view, after) and torch.equal(after, ref.score()[0])  # the same buffer, the next row in it
    flat = torch.zeros(2, 5)  # ties: numpy's argmax takes the first index, as torch's does; a last-index one would not
    flat[:, 1] = flat[:, 3] = 1.0
    assert torch.from_numpy(flat.numpy().argmax(-1)).tolist() == flat.argmax(-1).tolist() == [1, 1]
