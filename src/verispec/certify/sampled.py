"""Sampled checks of the production path: drafts, verifier and noise keying, run batched.

* `sampled_check`: one iteration for n independent requests (n >= 1e5), drafts drawn from a toy
  draft model with the production noise source, verified by the rule, completed by the target;
  the empirical law of gamma + 1 tokens is compared with the target's joint law under a TV
  bound calibrated to n.
* `chain_check`: several iterations per request with the engine's keying (noise keyed by the
  start position of each iteration, Gumbel noise by absolute position), the empirical law of
  the first `length` tokens tested by chi-square and the TV bound. This is what catches noise
  reused across iterations (ALGORITHMS.md §2.6).

TV bound: for n draws from a law t over M cells, E[TV] <= 1/2 sum_z sqrt(t_z (1 - t_z) / n) and
TV moves by at most 1/n per draw, so P(TV > E + sqrt(ln(1/delta) / (2n))) <= delta (McDiarmid).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy import stats

from ..noise import NoiseSource, Purpose, StepNoise
from ..tree import DraftTree
from ..verify.base import sample_categorical
from .toy import ToyLM, tree_rows


def tv_bound(target: torch.Tensor, n: int, delta: float = 1e-6) -> float:
    """Calibrated upper bound on the empirical TV of n draws from `target` (holds w.p. >= 1 - delta)."""
    t = target.double()
    return 0.5 * torch.sqrt(t * (1 - t) / n).sum().item() + math.sqrt(math.log(1 / delta) / (2 * n))


def toy_drafts(Q: ToyLM, code: torch.Tensor, length: torch.Tensor, gamma: int, k: int, kind: str,
               noise: StepNoise) -> DraftTree:
    """Draft k sequences of length gamma from Q after each request's prefix (code [B], length [B]).

    iid: inverse-CDF draws with DRAFT uniforms; wor: k distinct first tokens (sequentially,
    without replacement), then i.i.d. continuations; onehot: top-k first tokens then greedy;
    gumbel: exponential race on the shared GUMBEL rows (row j for draft j), as the Gumbel rules
    expect.
    """
    B, V = code.shape[0], Q.V
    drafts = torch.full((B, k, gamma), -1, dtype=torch.int64)
    qs = torch.zeros(B, k, gamma, V, dtype=torch.float64)
    c = code[:, None].expand(B, k).clone()
    drawn = torch.zeros(B, V, dtype=torch.bool)
    for t in range(gamma):
        for j in range(k):
            q = Q.rows(c[:, j], length + t)
            qs[:, j, t] = q
            if kind == "iid" or (kind == "wor" and t > 0):
                x = sample_categorical(q, noise.uniform(Purpose.DRAFT, j * gamma + t))
            elif kind == "wor":  # root children without replacement
                rest = torch.where(drawn, 0.0, q)
                x = sample_categorical(rest, noise.uniform(Purpose.DRAFT, j * gamma))
                x = torch.where(rest.sum(-1) > 0, x, -1)
                drawn |= torch.nn.functional.one_hot(x.clamp(min=0), V).bool() & (x >= 0)[:, None]
            elif kind == "onehot":
                x = q.argsort(dim=-1, descending=True, stable=True)[:, j] if t == 0 else q.argmax(-1)
                x = torch.where((q > 0).sum(-1) > j, x, -1) if t == 0 else x
            else:  # the exponential race on draft j's own noise row at absolute position + t
                x = noise.race(t, q, torch.tensor([j]))
            x = torch.where(drafts[:, j, t - 1] >= 0, x, -1) if t > 0 else x
            drafts[:, j, t] = x
            c[:, j] = c[:, j] * V + x.clamp(min=0)
    keep = (drafts[:, :, 0] >= 0).any(0)  # drop draft slots no request filled (onehot/wor, small supports)
    drafts, qs = drafts[:, keep], qs[:, keep]
    return DraftTree.from_drafts(drafts, qs, kind)  # for onehot: the drafter's soft law, for controls


def _complete(P: ToyLM, seqs: list[list[int]], length: int, rng: np.random.Generator) -> torch.Tensor:
    """Complete each sequence with target samples to `length` tokens; returns codes [n]."""
    V = P.V
    codes = np.zeros(len(seqs), dtype=np.int64)
    lens = np.zeros(len(seqs), dtype=np.int64)
    for i, s in enumerate(seqs):
        for x in s[:length]:
            codes[i] = codes[i] * V + x
        lens[i] = min(len(s), length)
    for m in range(length):
        todo = lens == m
        if todo.any():
            rows = P.rows(torch.from_numpy(codes[todo]), m).numpy()
            cdf = rows.cumsum(1)
            u = rng.random(todo.sum())[:, None] * cdf[:, -1:]
            x = np.minimum((cdf <= u).sum(1), V - 1)
            codes[todo] = codes[todo] * V + x
            lens[todo] = m + 1
    return torch.from_numpy(codes)


@dataclass
class SampledReport:
    tv: float
    bound: float
    pvalue: float
    n: int
    tokens: float = float("nan")  # mean tokens emitted per iteration (single-iteration checks)

    @property
    def ok(self) -> bool:
        return self.tv <= self.bound and self.pvalue > 1e-6


def _compare(target: torch.Tensor, codes: torch.Tensor, n: int) -> SampledReport:
    counts = torch.bincount(codes, minlength=target.numel()).double()
    tv = 0.5 * (counts / n - target).abs().sum().item()
    exp = target.numpy() * n
    obs = counts.numpy()
    big = exp >= 5  # pool cells with small expectation into one
    if (~big).any():
        exp = np.append(exp[big], exp[~big].sum())
        obs = np.append(obs[big], obs[~big].sum())
    keep = exp > 0
    if (obs[~keep] > 0).any():  # mass where the target has none
        return SampledReport(tv, tv_bound(target, n), 0.0, n)
    pval = float(stats.chisquare(obs[keep], exp[keep] * obs[keep].sum() / exp[keep].sum()).pvalue) if keep.sum() > 1 else 1.0
    return SampledReport(tv, tv_bound(target, n), pval, n)


def sampled_check(rule: Callable, P: ToyLM, Q: ToyLM, gamma: int, k: int, kind: str, n: int = 100_000,
                  seed: int = 0) -> SampledReport:
    """One iteration for n requests through the production path; empirical vs target law of gamma + 1 tokens."""
    V = P.V
    noise = NoiseSource(seed).step(torch.arange(n), torch.zeros(n, dtype=torch.int64))
    zero = torch.zeros(n, dtype=torch.int64)
    tree = toy_drafts(Q, zero, zero, gamma, k, kind, noise)
    codes, lens = tree_rows(tree, zero, zero, V)
    result = rule(tree, P.rows(codes, lens), noise)
    toks, count = result.output(tree)
    seqs = [row[:c] for row, c in zip(toks.tolist(), count.tolist())]
    target = P.argmax() if getattr(rule, "greedy_target", False) else P
    done = _complete(target, seqs, gamma + 1, np.random.default_rng(seed))
    rep = _compare(target.joint(gamma + 1), done, n)
    rep.tokens = count.double().mean().item()
    return rep


def chain_check(rule: Callable, P: ToyLM, Q: ToyLM, gamma: int, k: int, kind: str, length: int,
                n: int = 100_000, seed: int = 0, noise_source: NoiseSource | None = None,
                drafter_Q: ToyLM | None = None) -> tuple[SampledReport, torch.Tensor]:
    """Generate `length` tokens for n requests by repeated iterations; returns the report and the codes."""
    V = P.V
    source = noise_source or NoiseSource(seed)
    Qd = drafter_Q or Q
    code = torch.zeros(n, dtype=torch.int64)
    pos = torch.zeros(n, dtype=torch.int64)
    req = torch.arange(n)
    while (pos < length).any():
        act = (pos < length).nonzero()[:, 0]
        noise = source.step(req[act], pos[act])
        tree = toy_drafts(Qd, code[act], pos[act], gamma, k, kind, noise)
        codes, lens = tree_rows(tree, code[act], pos[act], V)
        result = rule(tree, P.rows(codes, lens), noise)
        toks, count = result.output(tree)
        for t in range(toks.shape[1]):  # append, truncated at `length`
            take = (t < count) & (pos[act] < length)
            idx = act[take]
            code[idx] = code[idx] * V + toks[take, t]
            pos[idx] += 1
    target = P.argmax() if getattr(rule, "greedy_target", False) else P
    return _compare(target.joint(length), code, n), code
