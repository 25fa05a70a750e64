"""How much acceptance a verifier leaves on the table: achieved vs optimal k-draft acceptance.

At the root of every verified draft tree (the first draft position) the target law p and the
draft law q are known, and so is the number k of drafts. No lossless rule can accept a first
token with probability above the optimal k-draft acceptance

    alpha*(p, q, k) = min over H of [ p(H) + 1 - Pr(all k drafts lie in H) ]

(SpecTr's OTM LP, Sun et al. 2023 arXiv 2310.15141; Khisti et al. 2024 arXiv 2410.18234; Hu et al.
2025 arXiv 2502.18779; `coupling/optimal.py`). `AcceptanceRecorder` wraps any verifier, delegates
every call to it and keeps, per call, the root rows p[0, 0] and q[0, 0] (float32 copies, [V]), k,
the draft kind and whether the first position was accepted. `root_gap` turns the records into

* achieved   the fraction of calls whose first position was accepted (an unbiased estimate),
* expected   the rule's exact first-position acceptance probability, where it has a closed form:
             token / specinfer with i.i.d. drafts (recursive rejection: the residual after a
             rejected i.i.d. trial does not depend on the rejected token, so
             P(all rejected) = prod_i TV(p_i, q) with p_{i+1} = norm(max(p_i - q, 0))),
             spectr (K-SEQ, `kseq_acceptance`), gumbel with Gumbel-coupled drafts (the race match
             probability, `gumbel_match_prob`); None for the others (block's first-position
             event depends on the later positions, GLS has only a lower bound),
* optimal    the mean of alpha*(p, q, k) over the same calls,

and checks expected <= optimal (a rule above the optimum is a bug in one of the two).
All of this runs after a generation, outside the timed region.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..coupling import gumbel_match_prob, kseq_acceptance, optimal_acceptance
from ..coupling.maximal import residual_unchecked
from ..verify import Verifier

_TOL = 1e-6


@dataclass
class RootRecord:
    p: torch.Tensor  # [V] float32 target law at the root
    q: torch.Tensor | None  # [V] float32 draft law at the root (None for onehot drafts without q)
    first: list[int]  # the k drafts' first tokens, in draw order (duplicates kept)
    kind: str  # draft kind: iid | wor | onehot | gumbel
    accepted: bool  # whether the verifier accepted a first token


class AcceptanceRecorder(Verifier):
    """A verifier proxy (pass it as `Engine(verifier=...)`): the wrapped rule decides, this records.

    Attributes `name`, `draft_kinds`, `max_drafts`, ... are the wrapped rule's, so the engine asks
    the drafter for the same draft kind. `enabled = False` turns recording off.
    """

    def __init__(self, rule: Verifier, enabled: bool = True):
        if not isinstance(rule, Verifier):
            raise ValueError(f"AcceptanceRecorder wraps a Verifier, got {type(rule).__name__}")
        self.rule, self.enabled = rule, enabled
        self.records: list[RootRecord] = []
        for a in ("name", "draft_kinds", "max_drafts", "needs_q", "exact_law", "deterministic", "greedy_target"):
            setattr(self, a, getattr(self.rule, a))

    def __call__(self, tree, p, noise):
        res = self.rule(tree, p, noise)
        if self.enabled:
            firsts = tree.paths[0, :, 0]  # [k] node of each draft's first token
            first = tree.tokens[0, firsts[firsts >= 0]].tolist()
            q = None if tree.q is None else tree.q[0, 0].detach().float().clone()
            self.records.append(RootRecord(p[0, 0].detach().float().clone(), q, first, tree.kind,
                                           bool(res.num_accepted[0] >= 1)))
        return res

    def plain(self, p, noise, k=1):
        return self.rule.plain(p, noise, k)

    def law(self, tree, p):
        return self.rule.law(tree, p)

    def take(self) -> list[RootRecord]:
        """The records so far, clearing the buffer."""
        out, self.records = self.records, []
        return out


def _law(x: torch.Tensor) -> torch.Tensor:
    x = x.double().clamp_min(0)
    return x / x.sum(-1, keepdim=True)


def rrs_iid_acceptance(p: torch.Tensor, q: torch.Tensor, k: int) -> torch.Tensor:
    """Exact P(some of k i.i.d. drafts accepted) under recursive rejection sampling (token: k = 1).

    SpecInfer Algorithm 2 (Miao et al. 2024, arXiv 2305.09781): trial i is accepted with
    probability sum min(p_i, q) = 1 - TV(p_i, q); after a rejection p_{i+1} = norm(max(p_i - q, 0)),
    whatever token was rejected. p, q: [..., V]; returns [...].
    """
    cur, miss = p, torch.ones(p.shape[:-1], dtype=p.dtype)
    for _ in range(k):
        a = torch.minimum(cur, q).sum(-1)
        miss = miss * (1 - a).clamp_min(0)
        cur, _ = residual_unchecked(cur, q)
    return 1 - miss


def expected_root_acceptance(rule: str, rec: RootRecord) -> float | None:
    """The rule's exact first-position acceptance for this record's (p, q, k), or None (no closed form)."""
    k = len(rec.first)
    if rec.q is None or k == 0:
        return None
    p, q = _law(rec.p), _law(rec.q)
    if rule in ("token", "specinfer") and rec.kind == "iid":
        return float(rrs_iid_acceptance(p, q, k))
    if rule == "spectr" and rec.kind == "iid":
        return float(kseq_acceptance(p, q, k))
    if rule == "gumbel" and rec.kind == "gumbel" and k == 1:
        return float(gumbel_match_prob(p, q))
    return None


def optimal_root_acceptance(rec: RootRecord, optimal=optimal_acceptance) -> float:
    """alpha*(p, q, k) for this record: i.i.d. / Gumbel drafts with replacement, 'wor' without,
    deterministic ('onehot') drafts p(set of first tokens) (a point-mass proposal can do no better)."""
    p = _law(rec.p)
    if rec.kind == "onehot" or rec.q is None:
        return float(p[sorted(set(rec.first))].sum())
    return float(optimal(p, _law(rec.q), len(rec.first), replacement=rec.kind != "wor"))


@dataclass
class GapSummary:
    calls: int = 0
    accepted: int = 0
    optimal_sum: float = 0.0
    expected_sum: float = 0.0
    expected_calls: int = 0
    violations: int = 0  # calls with expected > optimal + tol: a broken rule or a broken optimum
    by_k: dict = field(default_factory=dict)  # k -> [calls, accepted, optimal_sum]

    def add(self, other: GapSummary) -> None:
        self.calls += other.calls
        self.accepted += other.accepted
        self.optimal_sum += other.optimal_sum
        self.expected_sum += other.expected_sum
        self.expected_calls += other.expected_calls
        self.violations += other.violations
        for k, v in other.by_k.items():
            mine = self.by_k.setdefault(k, [0, 0, 0.0])
            for i in range(3):
                mine[i] += v[i]

    def to_dict(self) -> dict:
        """Means (achieved, expected, optimal, gap = optimal - achieved) and the raw sums (`raw`)."""
        n = self.calls
        return {"calls": n,
                "achieved": self.accepted / n if n else None,
                "expected": self.expected_sum / self.expected_calls if self.expected_calls else None,
                "optimal": self.optimal_sum / n if n else None,
                "gap": (self.optimal_sum - self.accepted) / n if n else None,
                "violations": self.violations,
                "by_k": {str(k): {"calls": c, "achieved": a / c, "optimal": o / c}
                         for k, (c, a, o) in sorted(self.by_k.items()) if c},
                "raw": {"calls": n, "accepted": self.accepted, "optimal_sum": self.optimal_sum,
                        "expected_sum": self.expected_sum, "expected_calls": self.expected_calls,
                        "violations": self.violations, "by_k": {str(k): v for k, v in self.by_k.items()}}}

    @staticmethod
    def from_dict(d: dict) -> GapSummary:
        """Inverse of to_dict (from its raw sums), for aggregating saved per-generation results."""
        r = d["raw"]
        return GapSummary(r["calls"], r["accepted"], r["optimal_sum"], r["expected_sum"], r["expected_calls"],
                          r["violations"], {int(k): list(v) for k, v in r["by_k"].items()})


def root_gap(rule: str, records: list[RootRecord], optimal=optimal_acceptance) -> GapSummary:
    """Achieved, expected and optimal first-position acceptance over `records` (see the module doc)."""
    g = GapSummary()
    for rec in records:
        k = len(rec.first)
        if k == 0:
            continue
        opt = optimal_root_acceptance(rec, optimal)
        exp = expected_root_acceptance(rule, rec)
        g.calls += 1
        g.accepted += rec.accepted
        g.optimal_sum += opt
        slot = g.by_k.setdefault(k, [0, 0, 0.0])
        slot[0] += 1
        slot[1] += rec.accepted
        slot[2] += opt
        if exp is not None:
            g.expected_calls += 1
            g.expected_sum += exp
            g.violations += exp > opt + _TOL
    return g
