"""TorchBackend keeps a chat template's leading part in the lean cache between requests (`reset(shared=n)`)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import verispec.backends.torch_llama as torch_llama  # noqa: E402
from verispec.backends import load_backend  # noqa: E402

SHARED = [1, 17, 42, 99, 5, 63, 8, 120, 33, 2, 4, 6, 7, 9, 11, 13, 15, 19, 21, 23]  # 20 tokens: the fused causal kernel
N = len(SHARED)
A = SHARED + [50, 51, 52, 53]
B = SHARED + list(range(60, 79))  # a rest of more than 16 tokens: the masked prefill
C = SHARED + [80, 81, 82]  # a rest of a few tokens: the batched-product attention
OTHER = [3] + SHARED[1:] + [90, 91]  # another leading part


def _spied(tiny_llama_dir):
    """A recording backend and the (start, tokens) of every lean forward pass it runs."""
    be = load_backend("torch", tiny_llama_dir)
    assert be._lean is not None
    be.record_features(True)
    calls = []
    forward = be._lean.forward

    def spy(ids, pos, start, mask, **kw):
        calls.append((start, ids.shape[0]))
        return forward(ids, pos, start, mask, **kw)

    be._lean.forward = spy
    return be, calls


def _same_as_fresh(be, tiny_llama_dir, prompt, shared) -> bool:
    fresh = load_backend("torch", tiny_llama_dir)
    fresh.record_features(True)
    fresh.reset(prompt, shared=shared)
    P = len(prompt) - 1
    return torch.equal(be.score(), fresh.score()) and torch.equal(be.features(0, P), fresh.features(0, P))


def test_the_kept_part_gives_a_fresh_backends_logits_and_features(tiny_llama_dir):
    be, calls = _spied(tiny_llama_dir)
    be.reset(A, shared=N)
    assert calls[:2] == [(0, N), (N, len(A) - 1 - N)]  # the part in a batch of its own, then the rest
    for prompt in (B, C):
        calls.clear()
        be.reset(prompt, shared=N)
        assert calls == [(N, len(prompt) - 1 - N)]  # only the rest is computed
        assert _same_as_fresh(be, tiny_llama_dir, prompt, N)


def test_kept_rows_that_differ_are_caught(tiny_llama_dir):
    """Control: rows of the kept part altered behind the backend's back change what the next request computes,
    and the comparison above sees it."""
    be, _ = _spied(tiny_llama_dir)
    be.reset(A, shared=N)
    be._lean.v[:, :, :, :N] += 0.5
    be.reset(B, shared=N)
    assert not _same_as_fresh(be, tiny_llama_dir, B, N)


def test_a_prompt_that_rewrites_the_rows_drops_the_kept_part(tiny_llama_dir):
    be, calls = _spied(tiny_llama_dir)
    for first, shared in ((A, N), (OTHER, 0), (A, N), (OTHER, N), (B, N)):
        be.reset(first, shared=shared)
    assert calls[-2:] == [(0, N), (N, len(B) - 1 - N)]  # OTHER's own part replaced SHARED's: computed again
    assert _same_as_fresh(be, tiny_llama_dir, B, N)
    calls.clear()
    be.record_features(False)
    be.record_features(True)  # the features of the kept rows are gone: computed again
    be.reset(C, shared=N)
    assert calls == [(0, N), (N, len(C) - 1 - N)]
    assert _same_as_fresh(be, tiny_llama_dir, C, N)


def test_a_rollback_into_the_part_drops_it(tiny_llama_dir):
    be, calls = _spied(tiny_llama_dir)
    be.reset(A, shared=N)
    be.truncate(N, 7)  # all of the part kept: it stays
    be.reset(C, shared=N)
    assert be._shared is not None
    be.truncate(5, 7)
    be.commit([], 9)  # writes row 5, inside the part
    calls.clear()
    be.reset(B, shared=N)
    assert calls == [(0, N), (N, len(B) - 1 - N)]
    assert _same_as_fresh(be, tiny_llama_dir, B, N)


def test_a_long_rest_is_prefilled_in_blocks_after_the_part(tiny_llama_dir, monkeypatch):
    """A part and a rest longer than `CAUSAL_BLOCK` rows (blocks of 8 here: a prefill of several blocks, the
    last one short) take the blocked causal attention at their offsets: the same bits as a fresh backend."""
    monkeypatch.setattr(torch_llama, "CAUSAL_BLOCK", 8)
    be, calls = _spied(tiny_llama_dir)
    be.reset(A, shared=N)
    calls.clear()
    be.reset(B, shared=N)
    assert calls == [(N, len(B) - 1 - N)]
    assert _same_as_fresh(be, tiny_llama_dir, B, N)


def test_transformers_forward_prefills_whole(tiny_llama_dir):
    be = load_backend("torch", tiny_llama_dir, lean=False)
    be.reset(A, shared=N)
    fresh = load_backend("torch", tiny_llama_dir, lean=False)
    fresh.reset(A)
    torch.testing.assert_close(be.score(), fresh.score(), atol=0, rtol=0)
