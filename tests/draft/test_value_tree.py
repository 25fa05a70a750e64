"""EAGLE-2's value tree (`draft/value_tree.py`) on toy drafters: what it keeps, what it expands, its errors.
The head's side (rows that see their ancestors, greedy output kept) is in test_head.py."""
from __future__ import annotations

import pytest
import torch

from verispec.draft.value_tree import TreeShape, as_drafts, best_size, grow_tree

VD = 5  # toy draft vocabulary


def law(path: tuple[int, ...]) -> torch.Tensor:
    """A toy drafter's next-token probabilities after `path`: a fixed random law per path, peaked."""
    g = torch.Generator().manual_seed(hash(path) % (2 ** 31))
    return torch.softmax(3 * torch.randn(VD, generator=g, dtype=torch.float64), -1)


def toy_expand(calls: list | None = None):
    def expand(nodes, tok, par, depth):
        out = []
        for n in nodes:
            path, a = [], n
            while a >= 0:
                path.append(tok[a])
                a = par[a]
            assert len(path) == depth
            out.append(law(tuple(reversed(path))))
            if calls is not None:
                calls.append((depth, tuple(reversed(path))))
        return torch.stack(out)
    return expand


def values(topk: int, depth: int) -> dict[tuple[int, ...], float]:
    """Every node of the full top-k tree to `depth` by its path: the product of probabilities along it."""
    out, frontier = {}, [((), 1.0)]
    for _ in range(depth):
        nxt = []
        for path, v in frontier:
            p = law(path)
            for t in p.topk(topk).indices.tolist():
                out[path + (t,)] = v * float(p[t])
                nxt.append((path + (t,), v * float(p[t])))
        frontier = nxt
    return out


def nodes_of(paths: list[list[int]]) -> set[tuple[int, ...]]:
    return {tuple(p[:d]) for p in paths for d in range(1, len(p) + 1)}


@pytest.mark.parametrize("nodes,keep", [(1, 0.0), (7, 0.0), (12, 0.02), (40, 0.05)])
def test_the_tree_is_the_most_valuable_nodes(nodes, keep):
    """With a wide beam and no expand threshold the tree holds exactly the `nodes` most valuable nodes of
    value >= keep of the full top-k tree, enumerated independently; the paths are its leaves, the most valuable
    first. Nodes that could not add a chosen child are not expanded."""
    shape, calls = TreeShape(nodes=nodes, topk=3, beam=100, keep=keep, expand=0.0), []
    paths, expected = grow_tree(law(()), toy_expand(calls), shape, depth=3)
    vals = values(3, 3)
    best = sorted((p for p in vals if vals[p] >= keep), key=lambda p: (-vals[p], len(p)))[:nodes]
    assert nodes_of(paths) == set(best)
    assert expected == pytest.approx(sum(vals[p] for p in best))
    leaves = [tuple(p) for p in paths]
    assert all(not any(q[:len(p)] == p and q != p for q in leaves) for p in leaves)  # no path inside another
    assert [vals[p] for p in leaves] == sorted((vals[p] for p in leaves), reverse=True)
    if nodes == 1:  # nothing below the best value found so far is expanded: one call, the best first token
        assert calls == [(1, max(((t,) for t in range(VD)), key=lambda p: vals.get(p, -1)))]
    elif nodes < 3 + 9:  # the full tree would expand all 3 + 9 nodes above its last depth
        assert len({p for _, p in calls}) < 3 + 9


def test_each_depth_expands_its_most_valuable_nodes():
    """One `expand` call per depth, over at most `beam` nodes of that depth: the most valuable of value >= expand;
    no depth beyond the budget."""
    calls = []
    shape = TreeShape(nodes=50, topk=3, beam=2, keep=0.0, expand=0.05)
    grow_tree(law(()), toy_expand(calls), shape, depth=4)
    vals, grown = values(3, 4), {}
    for d, path in calls:
        grown.setdefault(d, []).append(path)
    assert grown and max(grown) <= 3
    reachable = {(): 1.0}
    for d in sorted(grown):
        level = [p for p in vals if len(p) == d and p[:-1] in reachable]
        want = [p for p in sorted(level, key=lambda p: -vals[p])[:2] if vals[p] >= 0.05]
        assert grown[d] == want
        reachable = dict.fromkeys(want)


def test_nothing_worth_drafting_gives_no_tree_and_bad_shapes_fail():
    root = law(())
    assert grow_tree(root, toy_expand(), TreeShape(keep=float(root.max()) + 1e-6), depth=4) == ([], 0)
    top = root.topk(min(VD, 6)).indices.tolist()
    assert grow_tree(root, toy_expand(), TreeShape(), depth=1).paths == [[t] for t in top if root[t] >= 0.04]
    for bad in ({"nodes": 0}, {"topk": 1.5}, {"beam": True}, {"keep": 1.0}, {"expand": -0.1}):
        with pytest.raises(ValueError, match="TreeShape"):
            TreeShape(**bad)
    assert as_drafts([[4, 2, 3], [4, 1]]).tolist() == [[[4, 2, 3], [4, 1, -1]]]


def test_best_size_maximises_tokens_per_step():
    """(1 + the first n values) / price(n), by hand: dear rows keep two nodes, cheap rows three, free rows all."""
    vals = [0.9, 0.5, 0.1, 0.01]
    assert best_size(vals, lambda n: 1 + 0.05 * n) == 2  # 1.81, 2.18, 2.17, 2.09
    assert best_size(vals, lambda n: 1 + 0.01 * n) == 3  # 1.88, 2.35, 2.43, 2.41
    assert best_size(vals, lambda n: 1.0) == 4
    assert best_size(vals, lambda n: 1 + n) == 1  # every node costs a whole step: the best alone


@pytest.mark.parametrize("slope,size", [(0.002, 20), (0.01, 11), (0.05, 4), (0.2, 3)])
def test_a_priced_tree_is_the_best_rate_prefix_of_the_most_valuable_nodes(slope, size):
    """With a price the tree holds the n most valuable nodes (of at most `nodes`) for the n that maximises the
    expected tokens per step, whatever `keep` says beyond the first node; enumerated independently of the tree
    code. The four prices give four sizes, none the unpriced tree's 8 (keep = 0.05), so the price is read."""
    shape = TreeShape(nodes=20, topk=3, beam=100, keep=0.05, expand=0.0)
    price = lambda n: 1.0 + slope * n  # noqa: E731
    paths, expected = grow_tree(law(()), toy_expand(), shape, depth=3, price=price)
    vals = values(3, 3)
    ranked = sorted(vals, key=lambda p: (-vals[p], len(p)))[:20]
    rates = [(1 + sum(vals[p] for p in ranked[:n])) / price(n) for n in range(1, 21)]
    n = max(range(20), key=lambda i: rates[i]) + 1
    assert nodes_of(paths) == set(ranked[:n])
    assert expected == pytest.approx(sum(vals[p] for p in ranked[:n]))
    unpriced = grow_tree(law(()), toy_expand(), shape, depth=3).paths
    assert n == size and len(nodes_of(unpriced)) == 8
