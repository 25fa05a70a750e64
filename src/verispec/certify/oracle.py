"""The exact oracle: the law of one speculative iteration, completed by the target (ALGORITHMS.md §0).

Enumerate every draft outcome (every ordered k-tuple of drafts, with its probability under the
drafting scheme), ask the rule for the exact law of (accepted path, next token) given each
outcome, complete every output with the target to gamma + 1 tokens, and compare the result
with the target's own joint law. Iterations compose by induction, so this single-iteration
check is sufficient for a rule whose noise is fresh every iteration.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from ..tree import DraftTree
from .toy import ToyLM, tree_rows


@dataclass
class Outcomes:
    tree: DraftTree  # B = number of draft outcomes
    weight: torch.Tensor  # [B] probability of each outcome
    code: torch.Tensor  # [B, N + 1] prefix code of every row
    depth: torch.Tensor  # [B, N + 1] prefix length of every row (-1 padding)


def _seq_prob(Q: ToyLM, seq: tuple[int, ...], start: tuple[int, ...] = ()) -> float:
    """Probability that Q continues `start` with `seq` (autoregressively)."""
    pr, code, n = 1.0, _code(start, Q.V), len(start)
    for x in seq:
        pr *= float(Q.rows(torch.tensor(code), n)[x])
        code, n = code * Q.V + x, n + 1
    return pr


def _code(seq, V: int) -> int:
    c = 0
    for x in seq:
        c = c * V + x
    return c


def _greedy(Q: ToyLM, start: tuple[int, ...], length: int) -> tuple[int, ...]:
    seq = tuple(start)
    for _ in range(length):
        seq += (int(Q.rows(torch.tensor(_code(seq, Q.V)), len(seq)).argmax()),)
    return seq[len(start):]


def enumerate_drafts(Q: ToyLM, gamma: int, k: int, kind: str) -> list[tuple[float, list[tuple[int, ...]]]]:
    """Every draft outcome with its probability.

    iid:    k drafts of length gamma, i.i.d. autoregressive samples from Q (ordered tuples);
    wor:    k distinct first tokens drawn from Q without replacement (fewer if the support is
            smaller), each continued by an independent sample of length gamma - 1;
    onehot: deterministic: the top-k first tokens of Q, each continued greedily.
    """
    V = Q.V
    if kind == "onehot":
        root = Q.rows(torch.tensor(0), 0)
        firsts = root.argsort(descending=True, stable=True)[: min(k, V)].tolist()
        return [(1.0, [(f,) + _greedy(Q, (f,), gamma - 1) for f in firsts])]
    seqs = list(itertools.product(range(V), repeat=gamma))
    if kind == "iid":
        probs = {s: _seq_prob(Q, s) for s in seqs}
        seqs = [s for s in seqs if probs[s] > 0]
        out = []
        for tup in itertools.product(seqs, repeat=k):
            w = 1.0
            for s in tup:
                w *= probs[s]
            out.append((w, list(tup)))
        return out
    if kind == "wor":
        root = Q.rows(torch.tensor(0), 0).tolist()
        support = [x for x in range(V) if root[x] > 0]
        m = min(k, len(support))
        tails = list(itertools.product(range(V), repeat=gamma - 1))
        out = []
        for firsts in itertools.permutations(support, m):
            w, left = 1.0, 1.0
            for f in firsts:
                w *= root[f] / left
                left -= root[f]
            per_first = [[(f,) + t for t in tails if _seq_prob(Q, t, (f,)) > 0] for f in firsts]
            for combo in itertools.product(*per_first):
                wc = w
                for s in combo:
                    wc *= _seq_prob(Q, s[1:], s[:1])
                out.append((wc, list(combo)))
        return out
    raise ValueError(f"cannot enumerate drafts of kind {kind!r}")


def build_outcomes(P: ToyLM, Q: ToyLM, gamma: int, k: int, kind: str) -> tuple[Outcomes, torch.Tensor]:
    """Batch every outcome into one DraftTree; returns it and p [B, N + 1, V]."""
    outs = enumerate_drafts(Q, gamma, k, kind)
    B, V = len(outs), P.V
    width = max(len(d) for _, d in outs)
    drafts = torch.full((B, width, gamma), -1, dtype=torch.int64)
    for b, (_, ds) in enumerate(outs):
        for j, s in enumerate(ds):
            drafts[b, j, : len(s)] = torch.tensor(s)
    tree = DraftTree.from_drafts(drafts, None, kind)
    zero = torch.zeros(B, dtype=torch.int64)
    code, d = tree_rows(tree, zero, zero, V)
    depth = tree.depth()
    p = P.rows(code, d)
    tree.q = Q.rows(code, d)  # for onehot drafts: the drafter's soft law, which rules must ignore
    weight = torch.tensor([w for w, _ in outs], dtype=torch.float64)
    return Outcomes(tree, weight, code, depth), p


def completed_law(P: ToyLM, out: Outcomes, law: torch.Tensor, length: int) -> torch.Tensor:
    """Law [V ** length] of the first `length` tokens when each iteration output is completed by P.

    law [B, N + 1, V]: P(path ends at row r, next token y | outcome b). Output prefixes the
    target gives probability 0 are completed uniformly, so their mass shows up as error.
    """
    V = P.V
    mass = [torch.zeros(V**m, dtype=torch.float64) for m in range(length + 1)]
    w = out.weight[:, None, None] * law
    for m in range(1, length + 1):
        rows = out.depth == m - 1  # [B, N + 1]
        if not rows.any():
            continue
        codes = out.code[rows][:, None] * V + torch.arange(V)  # [n, V]
        mass[m].index_add_(0, codes.reshape(-1), w[rows].reshape(-1))
    joint = P.joint(length)
    result = torch.zeros_like(joint)
    for m in range(1, length + 1):
        if mass[m].sum() == 0:
            continue
        marg = P.joint(m)  # prefix marginals
        rep = V ** (length - m)
        pref = mass[m].repeat_interleave(rep)
        base = marg.repeat_interleave(rep)
        cont = torch.where(base > 0, joint / base.clamp_min(1e-300), torch.full_like(joint, 1.0 / rep))
        result += pref * cont
    return result


@dataclass
class ExactReport:
    tv: float  # total variation between the completed output law and the target joint
    expected_tokens: float  # E[tokens emitted per iteration] (accepted + 1)
    outcomes: int


def exact_check(rule, P: ToyLM, Q: ToyLM, gamma: int, k: int, kind: str, law_fn=None) -> ExactReport:
    """Run the exact oracle for `rule` (its `law`, or `law_fn(tree, p)`) on one toy instance."""
    out, p = build_outcomes(P, Q, gamma, k, kind)
    if getattr(rule, "greedy_target", False):
        P = P.argmax()  # the greedy rule is lossless for the temperature-0 target
    law = (law_fn or rule.law)(out.tree, p)
    total = law.sum((1, 2))
    if ((total - 1).abs() > 1e-9).any():
        raise AssertionError(f"rule {getattr(rule, 'name', rule)}: law does not sum to 1 ({total.min():.6g})")
    got = completed_law(P, out, law, gamma + 1)
    tv = 0.5 * (got - P.joint(gamma + 1)).abs().sum().item()
    toks = (out.weight[:, None, None] * law * (out.depth.clamp(min=0) + 1)[..., None]).sum().item()
    return ExactReport(tv, toks, len(out.weight))
