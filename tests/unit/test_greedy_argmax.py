"""Greedy.from_argmax (the engine's temperature-0 fast path) must equal Greedy on one-hot p."""
from __future__ import annotations

import torch

from verispec.tree import DraftTree, VerifyResult
from verispec.verify.rrs import Greedy


def _cases(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for trial in range(n):
        B = 2
        k, gamma = (int(torch.randint(1, 4, (1,), generator=g)) for _ in range(2))
        drafts = torch.randint(0, 3, (B, k, gamma), generator=g)  # 3 tokens: many shared prefixes
        if trial % 3 == 0 and gamma > 1:
            drafts[0, 0, -1] = -1  # a shorter draft
        tree = DraftTree.from_drafts(drafts, None, "onehot")
        top = torch.randint(0, 3, (B, tree.num_nodes + 1), generator=g)  # [B, N + 1]
        yield tree, top


def _mismatches(fast) -> int:
    bad = 0
    for tree, top in _cases(400):
        ref = Greedy()(tree, torch.nn.functional.one_hot(top, 5).double(), None)
        got = fast(tree, top)
        bad += not all(torch.equal(getattr(ref, f), getattr(got, f))
                       for f in ("path", "num_accepted", "next_token", "bonus"))
    return bad


def test_from_argmax_equals_greedy_on_onehot_p():
    assert _mismatches(Greedy.from_argmax) == 0


def _broken_from_argmax(tree, top):
    """Accepts a node whose token matches the argmax even when its parent was rejected."""
    B, N = tree.tokens.shape
    path = torch.full((B, tree.gamma), -1, dtype=torch.int64)
    num, nxt, bonus = (torch.zeros(B, dtype=torch.int64), torch.zeros(B, dtype=torch.int64),
                       torch.zeros(B, dtype=torch.bool))
    for b in range(B):
        acc = [i for i in range(N) if tree.tokens[b, i] >= 0
               and tree.tokens[b, i] == top[b, tree.parent[b, i] + 1]][: tree.gamma]
        last = acc[-1] if acc else -1
        if acc:
            path[b, : len(acc)] = torch.tensor(acc)
        num[b], nxt[b] = len(acc), top[b, last + 1]
        bonus[b] = not bool(((tree.parent[b] == last) & (tree.tokens[b] >= 0)).any())
    return VerifyResult(path, num, nxt, bonus)


def test_the_same_check_rejects_a_broken_fast_path():
    assert _mismatches(_broken_from_argmax) > 0
