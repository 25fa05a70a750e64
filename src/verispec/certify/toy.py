"""Tiny context-dependent "language models" for exact certification (ALGORITHMS.md §0).

A ToyLM is a table of next-token laws for every prefix up to a maximal length, drawn from a
Dirichlet with random zeros (so supports differ), seeded. Prefixes are coded in base V:
table row = offset[len] + code, with code(s + [y]) = code(s) * V + y.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SCENARIOS = ("random", "close", "equal", "zeros", "disjoint", "onehot-p")


@dataclass
class ToyLM:
    V: int
    max_len: int  # laws exist for prefixes of length 0..max_len
    table: torch.Tensor  # [n_prefixes, V] float64

    @property
    def offsets(self) -> list[int]:
        return [sum(self.V**m for m in range(n)) for n in range(self.max_len + 2)]

    def rows(self, code: torch.Tensor, length: torch.Tensor | int) -> torch.Tensor:
        """Laws [..., V] of the prefixes with the given codes and lengths."""
        length = torch.as_tensor(length)
        if (length > self.max_len).any():
            raise ValueError(f"prefix longer than the toy model's max_len = {self.max_len}")
        off = torch.tensor(self.offsets, dtype=torch.int64)[length]
        return self.table[off + code]

    def argmax(self) -> "ToyLM":
        """The temperature-0 version of this model (point mass on the first argmax)."""
        t = torch.zeros_like(self.table).scatter_(1, self.table.argmax(1, keepdim=True), 1.0)
        return ToyLM(self.V, self.max_len, t)

    def joint(self, length: int) -> torch.Tensor:
        """Joint law of the first `length` tokens, [V ** length] indexed by code."""
        law = torch.ones(1, dtype=torch.float64)
        for m in range(length):
            law = (law[:, None] * self.rows(torch.arange(self.V**m), m)).reshape(-1)
        return law


def _dirichlet(rng: np.random.Generator, n: int, V: int, zero_prob: float, alpha: float) -> np.ndarray:
    x = rng.dirichlet(np.full(V, alpha), size=n)
    if zero_prob > 0:
        keep = rng.random((n, V)) >= zero_prob
        keep[np.arange(n), rng.integers(0, V, n)] = True  # at least one token survives
        x = x * keep
    return x / x.sum(1, keepdims=True)


def make_pair(V: int, max_len: int, seed: int, scenario: str = "random") -> tuple[ToyLM, ToyLM]:
    """A (target p, draft q) pair of toy models; see SCENARIOS."""
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}, got {scenario!r}")
    rng = np.random.default_rng([seed, V, max_len, SCENARIOS.index(scenario)])
    n = sum(V**m for m in range(max_len + 1))
    zero = {"close": 0.0, "equal": 0.0, "zeros": 0.6}.get(scenario, 0.2)
    p = _dirichlet(rng, n, V, zero, 0.7)
    if scenario == "equal":
        q = p.copy()
    elif scenario == "close":
        q = 0.75 * p + 0.25 * _dirichlet(rng, n, V, 0.0, 1.0)
    elif scenario == "disjoint":
        q = _dirichlet(rng, n, V, 0.3, 0.7)
        half = rng.random((n, V)) < 0.5
        flip = rng.random(n) < 0.5  # half of the prefixes get disjoint supports
        p = np.where(flip[:, None] & ~half, 0.0, p)
        q = np.where(flip[:, None] & half, 0.0, q)
        p[p.sum(1) == 0, 0] = 1.0  # a row emptied by the split gets one token back
        q[q.sum(1) == 0, V - 1] = 1.0
        p, q = p / p.sum(1, keepdims=True), q / q.sum(1, keepdims=True)
    else:
        q = _dirichlet(rng, n, V, zero, 0.7)
    P = ToyLM(V, max_len, torch.from_numpy(p))
    Q = ToyLM(V, max_len, torch.from_numpy(q))
    if scenario == "onehot-p":
        P = P.argmax()
    return P, Q


def tree_rows(tree, code: torch.Tensor, length: torch.Tensor, V: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prefix code [B, N + 1] and length [B, N + 1] of every row of a DraftTree grown after
    prefixes with codes code [B] and lengths length [B] (padding rows get the parent's length)."""
    B, N = tree.tokens.shape
    codes = torch.zeros(B, N + 1, dtype=torch.int64)
    codes[:, 0] = code
    for i in range(N):
        par = tree.parent[:, i] + 1
        codes[:, i + 1] = codes.gather(1, par[:, None])[:, 0] * V + tree.tokens[:, i].clamp(min=0)
    return codes, length[:, None] + tree.depth().clamp(min=0)
