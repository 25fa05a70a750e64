"""Backend-agnostic checks of the score/commit contract, shared by the backend tests.

Each function takes any ``verispec.backends.Backend`` and returns tensors /
token lists; the test files decide the tolerance.
"""
from __future__ import annotations

import random

import torch


def plain_greedy(backend, prompt: list[int], steps: int, stop: set[int] = frozenset()):
    """Greedy tokens and their logit rows [steps, V] by one-token score/commit steps."""
    backend.reset(prompt)
    tokens, rows = [], []
    for _ in range(steps):
        row = backend.score()[0]
        tok = int(row.argmax())
        tokens.append(tok)
        rows.append(row)
        if tok in stop:
            break
        backend.commit([], tok)
    return tokens, torch.stack(rows)


def sequential_rows(backend, prompt: list[int], path_tokens: list[int]) -> torch.Tensor:
    """Logit rows [len(path)+1, V] after prompt and after each path token, one token per pass."""
    backend.reset(prompt)
    rows = [backend.score()[0]]
    for tok in path_tokens:
        backend.commit([], tok)
        rows.append(backend.score()[0])
    return torch.stack(rows)


def chain_rows(backend, prompt: list[int], path_tokens: list[int]) -> torch.Tensor:
    """Logit rows [len(path)+1, V] of the path scored as one chain in one pass."""
    backend.reset(prompt)
    n = len(path_tokens)
    return backend.score(torch.tensor(path_tokens, dtype=torch.long), torch.arange(-1, n - 1))


def root_path(parent: list[int], node: int) -> list[int]:
    """Node indices from the root down to ``node``."""
    path = []
    while node >= 0:
        path.append(node)
        node = parent[node]
    return path[::-1]


def random_tree(n: int, vocab: int, seed: int, hint: list[int] | None = None,
                hint_last: bool = False):
    """A random tree of ``n`` nodes (tokens, parent).

    With ``hint``, one root branch spells those tokens (so long paths get
    accepted): as the first nodes, or with ``hint_last`` as the last ones, after
    wrong branches, so that an accepted path skips rejected nodes.
    """
    rng = random.Random(seed)
    k = min(len(hint), max(1, n // 2)) if hint else 0
    tokens, parent = [], []
    first = 0 if not hint_last else n - k           # index of the hint branch's root
    for i in range(n):
        if first <= i < first + k:
            parent.append(-1 if i == first else i - 1)
            tokens.append(hint[i - first])
        else:
            pool = [j for j in range(i) if not first <= j < first + k]
            parent.append(rng.choice([-1] + pool))
            tokens.append(rng.randrange(vocab))
    return tokens, parent


def greedy_accept(logits: torch.Tensor, tokens: list[int], parent: list[int]):
    """Longest path whose every node is the argmax of its parent's row, and the next token."""
    best = logits.argmax(-1).tolist()            # [N+1]
    path, row = [], 0
    while True:
        nxt = [i for i, p in enumerate(parent) if p == row - 1 and tokens[i] == best[row]]
        if not nxt:
            return path, best[row]
        path.append(nxt[0])
        row = nxt[0] + 1


def speculative_greedy(backend, prompt: list[int], steps: int, oracle: list[int], seed: int = 0,
                       tree_size: int = 6):
    """Greedy decoding through random trees that sometimes contain the right tokens.

    ``oracle`` is the plain greedy continuation, used only to plant good
    branches (first or last in the tree, at random); the output must equal it.
    """
    backend.reset(prompt)
    out: list[int] = []
    rng = random.Random(seed)
    while len(out) < steps:
        hint = oracle[len(out):len(out) + rng.randrange(0, 5)]
        tokens, parent = random_tree(tree_size, backend.vocab_size, rng.randrange(1 << 30), hint,
                                     hint_last=rng.random() < 0.5)
        logits = backend.score(torch.tensor(tokens), torch.tensor(parent))
        path, nxt = greedy_accept(logits, tokens, parent)
        out.extend(tokens[i] for i in path)
        out.append(nxt)
        backend.commit(path, nxt)
    return out[:steps]
