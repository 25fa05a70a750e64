"""A draft tree shaped by the drafter's own confidence (EAGLE-2, Li et al. 2024, arXiv 2406.16858, §4).

A calibrated drafter (its probability for a token is about how often the target agrees, as the
head's is: docs/speed.md §6) gives every node of a draft tree a *value*, the product of its
probabilities along the path from the root: about the chance that greedy verification accepts
the node. The expected number of accepted tokens of a tree is the sum of its nodes' values, and
each node costs about the same (a row of the target's pass), so the best tree of n nodes holds
the n most valuable ones. EAGLE-2 builds it in two phases:

    expand   depth by depth, the `beam` most valuable nodes of the newest depth (value >= `expand`)
             go through the drafter in one step; each gets its top-`topk` children
    rerank   the tree is the `nodes` most valuable nodes of value >= `keep`; a child is never worth
             more than its parent, so they form a tree (ties go to the shallower node)

A node worth less than the `nodes`-th best value found so far is not expanded: its children are worth
no more than it, so none could be chosen (the same tree, fewer drafter steps).

With a `price` (the cost in plain steps of an iteration verifying n nodes: the target's pass over n + 1
rows and the drafting, as the engine's controller measures them), rerank keeps the n most valuable nodes
that maximise the expected tokens per unit of time, (1 + their values) / price(n), instead of all those
above `keep`: a node is worth its row where rows are cheap, and not where they are dear. `nodes` stays the
largest tree, and `keep` the value below which nothing is drafted at all.

Nodes are indices into the flat lists `tok` (draft-vocabulary index) and `par` (parent node, -1
for a child of the root); the drafter computes what it needs for a node (a cache row, a feature)
when `expand` first sees it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..checks import int_at_least

__all__ = ["Grown", "TreeShape", "as_drafts", "best_size", "grow_tree"]


@dataclass(frozen=True)
class TreeShape:
    """How large a value tree grows (defaults measured on Spec-Bench, docs/speed.md §7).

    nodes: at most this many nodes (the target scores them in one pass: ~0.45 ms a node against a
        ~16 ms step on 2 cores, so a node pays from a value of ~0.03; with a `price`, the most the price may keep).
    topk: children per expanded node.
    beam: nodes expanded per depth (each depth is one drafter step, ~0.6 ms for the head).
    keep: a node of lower value is not drafted (no node at all: a plain step).
    expand: a node of lower value is not expanded.
    """

    nodes: int = 10
    topk: int = 6
    beam: int = 2
    keep: float = 0.04
    expand: float = 0.1

    def __post_init__(self):
        for name in ("nodes", "topk", "beam"):
            v = getattr(self, name)
            if not int_at_least(v, 1):
                raise ValueError(f"TreeShape.{name} must be an int >= 1, got {v!r}")
        for name in ("keep", "expand"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"TreeShape.{name} must be in [0, 1), got {getattr(self, name)!r}")


Expand = Callable[[list[int], list[int], list[int], int], torch.Tensor]


class Grown(NamedTuple):
    paths: list[list[int]]  # root-to-leaf token indices, the most valuable leaf first; [] = no node
    expected: float  # the sum of the nodes' values: the accepted length expected if the drafter is calibrated


def grow_tree(root: torch.Tensor, expand: Expand, shape: TreeShape, depth: int,
              price: Callable[[int], float] | None = None) -> Grown:
    """The value tree as its root-to-leaf paths (token indices) and its expected accepted length.

    root: [Vd] the drafter's probabilities for the first token.
    expand(nodes, tok, par, d): [len(nodes), Vd] the probabilities for the children of `nodes` (all at
        depth d, parents already expanded), given the tree so far as flat lists `tok`, `par`.
    depth: the deepest a path may go (the draft budget gamma).
    price: n -> the cost of an iteration with n nodes, in plain steps (see the module doc); None = `keep` decides.
    """
    k = min(shape.topk, root.shape[-1])
    v, i = root.topk(k)
    tok, par, val, dep = i.tolist(), [-1] * k, v.tolist(), [1] * k
    newest = list(range(k))
    for d in range(1, depth):
        grow = [n for n in sorted(newest, key=lambda n: -val[n])[:shape.beam] if val[n] >= shape.expand]
        if len(val) >= shape.nodes:  # a node below the nodes-th best value so far: no child of it can be chosen
            bar = sorted(val, reverse=True)[shape.nodes - 1]
            grow = [n for n in grow if val[n] >= bar]
        if not grow:
            break
        cv, ci = expand(grow, tok, par, d).topk(k)  # [B, k]
        newest = []
        for j, n in enumerate(grow):
            for p, t in zip(cv[j].tolist(), ci[j].tolist()):
                newest.append(len(tok))
                tok.append(t), par.append(n), val.append(val[n] * p), dep.append(d + 1)
    ranked = sorted(range(len(tok)), key=lambda n: (-val[n], dep[n]))[:shape.nodes]
    chosen = [n for n in ranked if val[n] >= shape.keep]
    if price is not None and chosen:
        chosen = ranked[:best_size([val[n] for n in ranked], price)]
    inner = {par[n] for n in chosen}
    paths = []
    for leaf in (n for n in chosen if n not in inner):  # chosen is sorted: the most valuable leaf first
        path, n = [], leaf
        while n >= 0:
            path.append(tok[n])
            n = par[n]
        paths.append(path[::-1])
    return Grown(paths, sum(val[n] for n in chosen))


def best_size(values: list[float], price: Callable[[int], float]) -> int:
    """The n >= 1 maximising (1 + the sum of the first n values) / price(n); `values` in descending order."""
    best, best_rate, total = 1, -1.0, 1.0
    for n, v in enumerate(values, 1):
        total += v
        rate = total / price(n)
        if rate > best_rate:
            best, best_rate = n, rate
    return best


def as_drafts(paths: list[list[int]]) -> torch.Tensor:
    """Paths of unequal length as drafts [1, k, gamma] (-1 past a path's end), for `DraftTree.from_drafts`."""
    gamma = max(map(len, paths))
    return torch.tensor([[list(p) + [-1] * (gamma - len(p)) for p in paths]], dtype=torch.long)
