"""NGramDrafter: prompt lookup over the context."""
from __future__ import annotations

import time

import numpy as np
import pytest

from verispec.draft import DraftRequest, NGramDrafter
from verispec.noise import NoiseSource
from verispec.sampling import SamplingParams


def _req(tokens, k=1, kind="onehot"):
    return DraftRequest(list(tokens), NoiseSource(0).step(0, 0), SamplingParams(), k, kind)


def _drafts(tree):
    """The k drafts of a tree as token lists (in draw order)."""
    out = []
    for j in range(tree.k):
        nodes = [n for n in tree.paths[0, j].tolist() if n >= 0]
        out.append([int(tree.tokens[0, n]) for n in nodes])
    return out


def test_finds_the_continuation():
    d = NGramDrafter()
    tree = d.propose(_req([5, 6, 7, 8, 9, 10, 11, 3, 6, 7, 8]), 3)
    assert tree.kind == "onehot" and tree.q is None and tree.k == 1
    assert _drafts(tree) == [[9, 10, 11]]
    assert d.match_length == 3  # "6 7 8", preceded by 5 vs 3


def test_budget_and_end_of_context():
    d = NGramDrafter()
    assert _drafts(d.propose(_req([1, 2, 3, 4, 1, 2]), 1)) == [[3]]
    # the most recent "2 1 2" continues into the suffix itself: "1 2 1 2 1 2" -> "1 2"
    assert _drafts(d.propose(_req([9, 1, 2, 1, 2, 1, 2]), 8)) == [[1, 2]]


def test_prefers_longer_ngrams():
    # "7 8" occurs most recently before "... 7 8" with continuation 50, but "6 7 8" earlier with 40
    ctx = [6, 7, 8, 40, 41, 1, 7, 8, 50, 51, 2, 6, 7, 8]
    d = NGramDrafter(max_ngram=3, min_ngram=2)
    assert _drafts(d.propose(_req(ctx), 2)) == [[40, 41]]
    assert d.match_length == 3
    assert _drafts(NGramDrafter(max_ngram=2).propose(_req(ctx), 2)) == [[50, 51]]


def test_prefers_more_recent_matches():
    ctx = [3, 4, 10, 11, 0, 3, 4, 20, 21, 0, 3, 4]
    assert _drafts(NGramDrafter().propose(_req(ctx), 2)) == [[20, 21]]


def test_none_without_a_match():
    d = NGramDrafter(min_ngram=2)
    assert d.propose(_req([1, 2, 3, 4, 5, 6]), 4) is None
    assert d.match_length == 0
    assert d.propose(_req([1, 9, 3, 4, 5, 1]), 4) is None  # only a 1-gram repeats
    assert _drafts(NGramDrafter(min_ngram=1).propose(_req([1, 9, 3, 4, 5, 1]), 2)) == [[9, 3]]
    assert d.propose(_req([7]), 4) is None


def test_min_match_extends_backwards():
    ctx = [1, 2, 3, 30, 9, 2, 3, 40, 5, 1, 2, 3]  # "2 3" -> 40 (recent, match 2), "1 2 3" -> 30 (match 3)
    d = NGramDrafter(max_ngram=2, min_ngram=2)
    assert _drafts(d.propose(_req(ctx), 1)) == [[40]] and d.match_length == 2
    d = NGramDrafter(max_ngram=2, min_ngram=2, min_match=3)
    assert _drafts(d.propose(_req(ctx), 1)) == [[30]] and d.match_length == 3


def test_k_distinct_continuations():
    ctx = [1, 2, 10, 11, 1, 2, 20, 21, 1, 2, 10, 11, 1, 2, 30, 31, 1, 2]
    tree = NGramDrafter().propose(_req(ctx, k=3), 2)
    assert _drafts(tree) == [[30, 31], [10, 11], [20, 21]]  # most recent first, the repeat skipped
    assert tree.num_nodes == 6
    tree = NGramDrafter().propose(_req(ctx, k=5), 2)
    assert tree.k == 3  # only three distinct continuations exist
    # shared prefixes merge into one node: 10 -> {11, 12}
    tree = NGramDrafter().propose(_req([1, 2, 10, 11, 5, 1, 2, 10, 12, 6, 1, 2], k=2), 2)
    assert _drafts(tree) == [[10, 12], [10, 11]] and tree.num_nodes == 3


def test_k_falls_back_to_shorter_ngrams():
    ctx = [4, 5, 6, 60, 9, 5, 6, 70, 8, 4, 5, 6]
    assert _drafts(NGramDrafter(max_ngram=3).propose(_req(ctx, k=2), 1)) == [[60], [70]]


def test_incremental_context_equals_fresh():
    rng = np.random.default_rng(1)
    ctx = rng.integers(0, 12, 60).tolist()
    d = NGramDrafter()
    for step in range(40):
        ctx.append(int(rng.integers(0, 12)))
        if step == 20:
            ctx = ctx[:30] + [99] + ctx[30:]  # the context changes under the drafter: rebuilt
        got, want = d.propose(_req(ctx, k=2), 4), NGramDrafter().propose(_req(ctx, k=2), 4)
        assert (got is None) == (want is None)
        if got is not None:
            assert _drafts(got) == _drafts(want)


def test_bad_arguments():
    with pytest.raises(ValueError):
        NGramDrafter(max_ngram=1, min_ngram=2)
    with pytest.raises(ValueError):
        NGramDrafter(min_match=0)
    d = NGramDrafter()
    with pytest.raises(ValueError, match="onehot"):
        d.propose(_req([1, 2, 1, 2], kind="iid"), 2)
    with pytest.raises(ValueError):
        d.propose(_req([1, 2, 1, 2]), 0)


def test_speed_on_4000_tokens():
    rng = np.random.default_rng(0)
    words = rng.integers(0, 5000, 400)
    ctx = words[rng.integers(0, 400, 4000)].tolist()  # a repetitive 4000-token context
    d = NGramDrafter()
    d.propose(_req(ctx, k=4), 8)
    times = []
    for _ in range(100):
        ctx.append(int(words[rng.integers(0, 400)]))
        t0 = time.perf_counter()
        tree = d.propose(_req(ctx, k=4), 8)
        times.append(time.perf_counter() - t0)
        assert tree is None or tree.gamma <= 8
    t0 = time.perf_counter()
    NGramDrafter().propose(_req(ctx), 8)
    cold = time.perf_counter() - t0
    print(f"\nngram propose on {len(ctx)} tokens: median {1e3 * np.median(times):.3f} ms, "
          f"max {1e3 * max(times):.3f} ms, cold (first call) {1e3 * cold:.3f} ms")
