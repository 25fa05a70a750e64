"""Shared instance generators and statistical checks for tests/coupling (imported by the test files)."""

from __future__ import annotations

import math

import numpy as np
import scipy.stats
import torch


def random_dist(rng: np.random.Generator, V: int, zero_frac: float = 0.25) -> torch.Tensor:
    """A Dirichlet probability vector [V] with random zeros (at least one entry kept), float64."""
    x = rng.dirichlet(np.full(V, rng.choice([0.3, 1.0, 3.0])))
    x[rng.random(V) < zero_frac] = 0.0
    if x.sum() == 0:
        x[rng.integers(V)] = 1.0
    return torch.tensor(x / x.sum(), dtype=torch.float64)


def random_pairs(seed: int, n: int, v_lo: int, v_hi: int, zero_frac: float = 0.25):
    """n pairs (p, q) with V drawn uniformly in [v_lo, v_hi], both with random zeros."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        V = int(rng.integers(v_lo, v_hi + 1))
        out.append((random_dist(rng, V, zero_frac), random_dist(rng, V, zero_frac)))
    return out


def within_5se(estimate: float, exact: float, n: int) -> bool:
    """|estimate - exact| <= 5 binomial standard errors (n draws), plus float slack."""
    se = math.sqrt(max(exact * (1.0 - exact), 0.0) / n)
    return abs(estimate - exact) <= 5.0 * se + 1e-12


def law_pvalue(samples: torch.Tensor, probs: torch.Tensor) -> float:
    """Chi-square p-value of integer samples against probs [V]; 0.0 if a zero-probability value occurs."""
    V = probs.numel()
    counts = torch.bincount(samples.reshape(-1), minlength=V).double()
    if bool((counts[probs == 0] > 0).any()):
        return 0.0
    keep = probs > 0
    if int(keep.sum()) < 2:
        return 1.0
    n = counts.sum()
    return float(scipy.stats.chisquare(counts[keep].numpy(), (n * probs[keep] / probs[keep].sum()).numpy()).pvalue)


P_MIN = 1e-6  # chi-square acceptance threshold: a correct sampler fails with probability 1e-6 per check
