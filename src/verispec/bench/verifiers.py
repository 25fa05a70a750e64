"""Micro-benchmark of every registered verification rule on CPU.

For each rule of :data:`verispec.verify.REGISTRY` and each (gamma, k, B) it builds one
realistic verification problem and times the full call ``rule(tree, p, noise)`` (input
validation included) with warm-up; the median over repetitions is reported in ms.

Inputs, as a serving engine would hand them to the verifier:

* draft logits: float32 Gaussian logits scaled so that the laws are peaked (top
  probability ~0.5, entropy ~2 nats at V = 49152), one logit row per depth; target logits
  are the draft logits plus a small perturbation, so p and q are close and acceptance is
  high -- the slow path, where a node-by-node walk runs all gamma + 1 steps;
* probabilities: :func:`verispec.sampling.probs_from_logits` (temperature 1, no
  truncation; temperature 0 for the greedy rule), i.e. float64 rows summing to 1;
* drafts sampled from q with the kind the rule is meant for: ``iid`` (token, block,
  specinfer, spectr), ``wor`` (specinfer-wor: k distinct children of the root, drawn
  sequentially without replacement, then one child per node), ``gumbel`` (gumbel, gls,
  gls-strong: draft j at depth t is the exponential race of q on noise row j at position
  t), ``onehot`` (greedy: the draft's argmax, a greedy drafter);
* noise: ``NoiseSource(seed).step(request_ids, positions)``.

Goals (the verdict column): every call < 2 ms at B = 1, gamma = 8, k = 1; multi-draft rules
(``max_drafts`` None) < 10 ms at B = 1, k = 8.

    python -m verispec.bench.verifiers [--rules token,spectr] [--threads 1] [--repeats 10]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from ..coupling.comm_free import race_argmin
from ..noise import NoiseSource, StepNoise
from ..sampling import SamplingParams, probs_from_logits
from ..tree import DraftTree
from ..verify import REGISTRY, Verifier

LOGIT_SCALE = 6.0  # std of the draft logits: top prob ~0.5, entropy ~2 nats at V = 49152
TARGET_NOISE = 0.02  # target logits = draft logits + TARGET_NOISE * LOGIT_SCALE * N(0, 1): 1 - TV ~ 0.97
GOAL_SINGLE_MS = 2.0  # B = 1, gamma = 8, k = 1, every rule
GOAL_MULTI_MS = 10.0  # B = 1, k = 8, multi-draft rules

# Draft kind each rule is benchmarked with (rules not listed: their first accepted kind).
RULE_KIND = {
    "greedy": "onehot",
    "token": "iid",
    "block": "iid",
    "specinfer": "iid",
    "spectr": "iid",
    "specinfer-wor": "wor",
    "gumbel": "gumbel",
    "gls": "gumbel",
    "gls-strong": "gumbel",
}


def rule_kind(rule: Verifier) -> str:
    kind = RULE_KIND.get(rule.name)
    return kind if kind in rule.draft_kinds else rule.draft_kinds[0]


def rule_ks(rule: Verifier, ks) -> list[int]:
    """The k values a rule is benchmarked at: all of ks for multi-draft rules, else k <= max_drafts."""
    return [k for k in ks if rule.max_drafts is None or k <= rule.max_drafts]


@dataclass
class Problem:
    tree: DraftTree
    p: torch.Tensor
    noise: StepNoise


def make_problem(rule: Verifier, V: int, gamma: int, k: int, B: int, seed: int = 0) -> Problem:
    """One verification problem for `rule` (see the module docstring)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + 7919 * gamma + 101 * k + B)
    kind = rule_kind(rule)
    greedy = rule.greedy_target
    params = SamplingParams(temperature=0.0) if greedy else SamplingParams()
    # float32 logits as a model would give them, one row per depth (q depends on the depth only,
    # so it is the same for drafts that share a prefix, as DraftTree requires)
    logits_q = torch.randn(B, gamma + 1, V, generator=gen) * LOGIT_SCALE
    logits_p = logits_q + torch.randn(B, gamma + 1, V, generator=gen) * (TARGET_NOISE * LOGIT_SCALE)
    logits_q, logits_p = logits_q.float(), logits_p.float()
    q_depth = probs_from_logits(logits_q[:, :gamma], SamplingParams())  # [B, gamma, V] float64
    p_depth = probs_from_logits(logits_p, params)  # [B, gamma + 1, V] float64
    noise = NoiseSource(seed).step(torch.arange(B, dtype=torch.int64), 1000 + 17 * torch.arange(B, dtype=torch.int64))

    if kind == "iid":
        flat = q_depth.reshape(B * gamma, V)
        drafts = torch.multinomial(flat, k, replacement=True, generator=gen).view(B, gamma, k).transpose(1, 2)
    elif kind == "wor":
        first = torch.multinomial(q_depth[:, 0], k, replacement=False, generator=gen)  # [B, k] distinct
        rest = torch.multinomial(q_depth[:, 1:].reshape(-1, V), k, replacement=True, generator=gen) if gamma > 1 \
            else torch.empty(0, dtype=torch.int64)
        rest = rest.view(B, gamma - 1, k).transpose(1, 2)
        drafts = torch.cat([first[:, :, None], rest], 2)
    elif kind == "gumbel":
        drafts = torch.empty(B, k, gamma, dtype=torch.int64)
        for t in range(gamma):
            E = noise.exponential(t, k, V)  # [B, k, V], position-keyed: the verifier reads the same rows
            for j in range(k):
                drafts[:, j, t] = race_argmin(q_depth[:, t], E[:, j])
    elif kind == "onehot":
        drafts = q_depth.argmax(-1)[:, None, :].expand(B, k, gamma).contiguous()
    else:
        raise ValueError(f"no draft generator for kind {kind!r}")

    q = None
    if kind in ("iid", "wor"):
        q = q_depth[:, None].expand(B, k, gamma, V)  # q of draft j's token t: the depth-t law
    tree = DraftTree.from_drafts(drafts.contiguous(), q, kind)  # (from_drafts needs contiguous drafts)
    depth = tree.depth().clamp(min=0)  # [B, N + 1]; padding rows get a harmless valid law
    p = p_depth[torch.arange(B)[:, None], depth]  # [B, N + 1, V]
    return Problem(tree, p, noise)


def slow_problem(rule: Verifier, V: int, gamma: int, k: int, B: int, seed: int = 0,
                 tries: int = 8) -> Problem:
    """The problem with the most accepted tokens among `tries` seeds (stops at full acceptance).

    A node-by-node walk stops as soon as every request is done, so a run that rejects early
    would time the fast path; the benchmark wants the slow, high-acceptance one.
    """
    best, best_tau = None, -1.0
    for i in range(max(tries, 1)):
        prob = make_problem(rule, V, gamma, k, B, seed + 1000 * i)
        tau = float(rule(prob.tree, prob.p, prob.noise).num_accepted.double().mean())
        if tau > best_tau:
            best, best_tau = prob, tau
        if tau >= gamma:
            break
    return best


def time_call(rule: Verifier, prob: Problem, repeats: int, warmup: int,
              max_seconds: float) -> tuple[float, float, float]:
    """(median ms, min ms, mean accepted tokens) of rule(tree, p, noise) over `repeats` timed calls."""
    res = None
    for _ in range(warmup):
        res = rule(prob.tree, prob.p, prob.noise)
    times = []
    start = time.perf_counter()
    for i in range(repeats):
        t0 = time.perf_counter()
        res = rule(prob.tree, prob.p, prob.noise)
        times.append(time.perf_counter() - t0)
        if i >= 2 and time.perf_counter() - start > max_seconds:
            break
    return 1e3 * statistics.median(times), 1e3 * min(times), float(res.num_accepted.double().mean())


def run(rules=None, V: int = 49152, gammas=(4, 8), ks=(1, 4, 8), batches=(1, 8), repeats: int = 10,
        progress: bool = True, threads: int | None = None, warmup: int = 2, max_seconds: float = 5.0,
        seed: int = 0, slow_path: bool = True, tries: int = 8) -> list[dict]:
    """Benchmark `rules` (names; None = every registered rule).

    Returns one dict per (rule, gamma, k, B) with keys rule, V, gamma, k, B, ms (median wall
    time of one call, ms), plus min_ms (fastest call: robust to a busy machine), tau (mean
    accepted tokens per request: acceptance is meant to be high) and error (None, or the exception text when the call raised; ms is then nan).
    threads: torch.set_num_threads(threads) for the run (None = leave torch's default).
    max_seconds: stop repeating a configuration after this long (at least 3 timed calls).
    slow_path: build up to `tries` problems (seeds) and time the one with the most accepted
    tokens, so that the walk runs to the end (the slow path) rather than stopping early.
    """
    names = list(REGISTRY) if rules is None else list(rules)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown rule(s) {unknown}; known: {', '.join(REGISTRY)}")
    configs = [(n, g, k, b) for n in names for g in gammas for k in rule_ks(REGISTRY[n], ks) for b in batches]
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    rows = []
    try:
        for name, gamma, k, B in tqdm(configs, desc="verifiers", disable=not progress, file=sys.stderr):
            rule = REGISTRY[name]
            row = {"rule": name, "V": V, "gamma": gamma, "k": k, "B": B, "ms": math.nan,
                   "min_ms": math.nan, "tau": math.nan, "error": None}
            try:
                prob = slow_problem(rule, V, gamma, k, B, seed, tries) if slow_path else \
                    make_problem(rule, V, gamma, k, B, seed)
                row["ms"], row["min_ms"], row["tau"] = time_call(rule, prob, repeats, warmup, max_seconds)
            except Exception as e:  # a broken rule must not hide the others' numbers
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            rows.append(row)
    finally:
        torch.set_num_threads(old_threads)
    return rows


def verdict(row: dict) -> str:
    """Goal check for the rows a goal applies to ('' for the others)."""
    rule = REGISTRY.get(row["rule"])
    goals = []
    if row["B"] == 1 and row["gamma"] == 8 and row["k"] == 1:
        goals.append(GOAL_SINGLE_MS)
    if rule is not None and rule.max_drafts is None and row["B"] == 1 and row["k"] == 8:
        goals.append(GOAL_MULTI_MS)
    if not goals:
        return ""
    goal = min(goals)
    if row.get("error"):
        return f"ERROR (goal < {goal:g} ms)"
    ms = row["ms"]
    return f"{'ok' if ms < goal else 'SLOW'} (< {goal:g} ms{'' if ms < goal else f', x{ms / goal:.1f}'})"


def format_table(rows: list[dict]) -> str:
    """Markdown table: one row per rule/gamma/k/B with the median (and min) ms, mean tau and the goal verdict."""
    lines = ["| rule | V | gamma | k | B | ms | min ms | tau | goal |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        ms = f"{r['ms']:.2f}" if r["ms"] == r["ms"] else "n/a"
        mn = r.get("min_ms", math.nan)
        mn = f"{mn:.2f}" if mn == mn else "n/a"
        tau = r.get("tau", math.nan)
        tau = f"{tau:.2f}" if tau == tau else "n/a"
        v = verdict(r)
        if r.get("error"):
            v = (v + " " if v else "") + f"`{r['error'][:80]}`"
        lines.append(f"| {r['rule']} | {r['V']} | {r['gamma']} | {r['k']} | {r['B']} | {ms} | {mn} | {tau} | {v} |")
    return "\n".join(lines)


def _ints(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.split(",") if x.strip())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m verispec.bench.verifiers", description=__doc__.split("\n")[0])
    ap.add_argument("--rules", default=None, help="comma-separated rule names (default: every registered rule)")
    ap.add_argument("--V", type=int, default=49152, help="vocabulary size")
    ap.add_argument("--gammas", type=_ints, default=(4, 8))
    ap.add_argument("--ks", type=_ints, default=(1, 4, 8))
    ap.add_argument("--batches", type=_ints, default=(1, 8))
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--max-seconds", type=float, default=5.0, help="time cap per configuration")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tries", type=int, default=8, help="problems tried per configuration to find the slow path")
    ap.add_argument("--any-path", action="store_true", help="time the first problem built, not the slowest path")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    rules = None if a.rules is None else [r.strip() for r in a.rules.split(",") if r.strip()]
    rows = run(rules, V=a.V, gammas=a.gammas, ks=a.ks, batches=a.batches, repeats=a.repeats,
               progress=not a.no_progress, threads=a.threads, warmup=a.warmup, max_seconds=a.max_seconds,
               seed=a.seed, slow_path=not a.any_path, tries=a.tries)
    print(f"torch {torch.__version__}, threads {a.threads or torch.get_num_threads()}, V = {a.V}")
    print(format_table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
