"""A short demonstration: the verifiers on textbook instances, before any model is loaded."""
from __future__ import annotations

import torch

from .certify.oracle import exact_check
from .certify.toy import ToyLM, make_pair
from .coupling.kseq import kseq_acceptance
from .coupling.maximal import overlap
from .coupling.optimal import optimal_acceptance
from .verify import get_verifier


def _constant(V: int, dist: list[float], max_len: int) -> ToyLM:
    n = sum(V**m for m in range(max_len + 1))
    return ToyLM(V, max_len, torch.tensor(dist, dtype=torch.float64).expand(n, V).clone())


def run_demo() -> None:
    print("1. Block vs token verification (Sun et al. 2024): p = (1/3, 2/3), q = (2/3, 1/3), gamma = 2")
    P, Q = _constant(2, [1 / 3, 2 / 3], 3), _constant(2, [2 / 3, 1 / 3], 3)
    for name in ("token", "block"):
        r = exact_check(get_verifier(name), P, Q, 2, 1, "iid")
        print(f"   {name:6s} E[accepted drafts] = {r.expected_tokens - 1:.6f}   TV to target = {r.tv:.1e}")
    print("   (the paper: 10/9 = 1.111111 and 11/9 = 1.222222)")
    print("\n2. Acceptance at one node with k i.i.d. drafts (random pair, V = 8)")
    P, Q = make_pair(8, 1, 3, "random")
    p, q = P.rows(torch.tensor(0), 0), Q.rows(torch.tensor(0), 0)
    print("   k  1-TV    K-SEQ   optimal(with repl.)  optimal(without)")
    for k in (1, 2, 4, 8):
        print(f"   {k}  {overlap(p, q).item():.4f}  {kseq_acceptance(p, q, k).item():.4f}  "
              f"{optimal_acceptance(p, q, k).item():.4f}               "
              f"{optimal_acceptance(p, q, k, replacement=False).item():.4f}")
    print("\nRun `verispec certify --all` for the full exactness table.")
