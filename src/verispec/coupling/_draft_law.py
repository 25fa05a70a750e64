"""Enumerated law of k drafts from one draft distribution q (tiny V only; numpy).

Shared by the brute-force and LP references in :mod:`verispec.coupling.optimal`. Sampling modes:

* with replacement: k i.i.d. draws, ``Q(x_1..x_k) = prod_j q(x_j)``;
* without replacement: sequential draws, each from q restricted to the not-yet-drawn tokens and
  renormalised, ``Q(x_1..x_k) = prod_j q(x_j) / q(not {x_1..x_{j-1}})``. If k exceeds the support
  size n of q, drawing stops once the support is exhausted: the tuples have length ``min(k, n)``.

Only tuples of positive probability (tokens in the support of q) are listed.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def count_tuples(V: int, k: int, replacement: bool) -> int:
    """Upper bound on the number of draft tuples for vocabulary V (V**k, or V!/(V-k)!)."""
    return V**k if replacement else math.perm(V, min(k, V))


def draft_tuples(q: np.ndarray, k: int, replacement: bool) -> tuple[np.ndarray, np.ndarray]:
    """All draft tuples of positive probability and their probabilities.

    q: [V] probability vector (numpy, float64); k >= 1. Returns ``(tuples [T, L] int, probs [T])``
    with ``L = k`` (with replacement) or ``L = min(k, |supp q|)`` (without); probs sum to 1.
    """
    q = np.asarray(q, dtype=np.float64) / np.sum(q)
    support = np.flatnonzero(q > 0)
    if replacement:
        tuples = np.array(list(itertools.product(support, repeat=k)), dtype=np.int64)
        return tuples, np.prod(q[tuples], axis=1)
    length = min(k, support.size)
    tuples = np.array(list(itertools.permutations(support, length)), dtype=np.int64)
    probs = np.ones(len(tuples))
    left = np.full(len(tuples), 1.0)  # q-mass not drawn yet (kept as a sum of the remaining q's)
    drawn = np.zeros((len(tuples), q.size), dtype=bool)
    for j in range(length):
        x = tuples[:, j]
        probs *= q[x] / left
        drawn[np.arange(len(tuples)), x] = True
        left = np.where(drawn, 0.0, q).sum(axis=1)
    return tuples, probs
