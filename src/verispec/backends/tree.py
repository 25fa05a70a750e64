"""Draft-tree bookkeeping shared by the backends (pure Python / torch, no model).

Index convention used throughout: *row* 0 is pending, row ``i + 1`` is tree node
``i``.  Node depths count from pending: a child of pending has depth 1.

``dfs_order`` lists the nodes in depth-first preorder, children in index
order; leaves are kept in that order too, so leaf 0 ends the "first-child
chain" (the drafter's top guess when children are listed best first).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["TreeLayout", "make_layout", "check_path", "ancestor_mask", "dfs_order"]


@dataclass(frozen=True)
class TreeLayout:
    """A validated draft tree of ``n`` nodes (pending excluded)."""

    tokens: tuple[int, ...]   # [N] node token ids
    parent: tuple[int, ...]   # [N] parent node index, -1 = child of pending
    depth: tuple[int, ...]    # [N] 1 for children of pending
    leaves: tuple[int, ...]   # node indices without children, in depth-first preorder
    order: tuple[int, ...]    # [N] all node indices in depth-first preorder

    @property
    def n(self) -> int:
        """Number of tree nodes N."""
        return len(self.tokens)

    @property
    def is_chain(self) -> bool:
        """True when node i's parent is i - 1 for every node (a single draft)."""
        return all(p == i - 1 for i, p in enumerate(self.parent))

    def leaf_of(self) -> list[int]:
        """[N] for each node, the index (into ``leaves``) of one leaf below it."""
        owner = [-1] * self.n
        for k, leaf in enumerate(self.leaves):
            node = leaf
            while node >= 0 and owner[node] < 0:
                owner[node] = k
                node = self.parent[node]
        return owner

    def leaf_sets(self) -> list[list[int]]:
        """[N] for each node, the indices (into ``leaves``) of all leaves below it."""
        sets: list[list[int]] = [[] for _ in range(self.n)]
        for k, leaf in enumerate(self.leaves):
            node = leaf
            while node >= 0:
                sets[node].append(k)
                node = self.parent[node]
        return sets


def make_layout(tokens: list[int], parent: list[int]) -> TreeLayout:
    """Validate a tree (parents before children) and compute depths and leaves."""
    if len(tokens) != len(parent):
        raise ValueError(f"tokens ({len(tokens)}) and parent ({len(parent)}) differ in length")
    depth: list[int] = []
    children: list[list[int]] = [[] for _ in range(len(tokens) + 1)]  # slot 0 = pending
    for i, p in enumerate(parent):
        if not -1 <= p < i:
            raise ValueError(f"parent[{i}] = {p}: must satisfy -1 <= parent[i] < i")
        depth.append(1 if p < 0 else depth[p] + 1)
        children[p + 1].append(i)
    order = dfs_order(children)
    leaves = tuple(i for i in order if not children[i + 1])
    return TreeLayout(tuple(tokens), tuple(parent), tuple(depth), leaves, tuple(order))


def dfs_order(children: list[list[int]]) -> list[int]:
    """Depth-first preorder of the nodes; ``children[i + 1]`` = children of node i, [0] = roots."""
    order: list[int] = []
    stack = list(reversed(children[0]))
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(reversed(children[node + 1]))
    return order


def check_path(layout: TreeLayout, path: list[int]) -> None:
    """Raise ValueError unless ``path`` is a root-to-node chain of ``layout``."""
    prev = -1
    for j, node in enumerate(path):
        if not 0 <= node < layout.n or layout.parent[node] != prev:
            raise ValueError(
                f"path {path} is not a root-to-node chain of the scored tree (at step {j})")
        prev = node


def ancestor_mask(layout: TreeLayout) -> torch.Tensor:
    """BoolTensor [N + 1, N + 1]: entry (r, c) is True when row r may attend to row c.

    Rows/columns: 0 = pending, i + 1 = node i.  Every row sees pending, itself
    and its ancestors.
    """
    n = layout.n
    mask = torch.zeros(n + 1, n + 1, dtype=torch.bool)
    mask[:, 0] = True
    for i, p in enumerate(layout.parent):
        if p >= 0:
            mask[i + 1] = mask[p + 1]
        mask[i + 1, i + 1] = True
    return mask
