"""When and how far to speculate: the target's verify-cost curve T(k) and an acceptance model.

T(k) is the time to score k tokens in one forward pass (the pending token plus k - 1 draft
nodes) divided by the time of one plain decoding step. It is measured once per (backend,
model file, threads, machine) and cached on disk. On 2 CPU cores llama.cpp's Q4_1 SmolLM2 has
T(4) ~ 3 and T(8) ~ 4.4, so only long, near-certain drafts pay.

The controller keeps a per-token acceptance estimate alpha for each bucket of draft
confidence (the n-gram match length, or one bucket for a model drafter; Beta prior, counts
from the verified positions) and picks the draft length gamma maximising expected tokens per
unit of time, E(gamma) / (T(gamma + 1) + gamma * c_draft) with E(gamma) = (1 - alpha^(gamma+1))
/ (1 - alpha) (Leviathan et al. 2023, eq. 1). gamma = 0 (plain decoding, rate 1) wins unless
speculation is expected to be faster by a margin: verispec must not be slower than plain decoding.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass, field

import torch

from ..cache import cache_dir


@dataclass
class CostCurve:
    """T[k] for k = 1..len(T) (T[1] = 1 by definition); step_s = seconds of one plain step."""

    T: list[float]
    step_s: float

    def __call__(self, k: int) -> float:
        if k <= len(self.T):
            return self.T[k - 1]
        slope = (self.T[-1] - self.T[-2]) if len(self.T) > 1 else 1.0  # extrapolate linearly
        return self.T[-1] + slope * (k - len(self.T))

    @staticmethod
    def measure(backend, k_max: int = 12, reps: int = 5, context: int = 128) -> "CostCurve":
        """Time chains of k - 1 nodes after a `context`-token prefix (median of reps); restores nothing:
        call before `reset` of a real request."""
        V = backend.vocab_size
        g = torch.Generator().manual_seed(0)
        prefix = torch.randint(0, V, (context,), generator=g).tolist()
        backend.reset(prefix)
        times = []
        for k in range(1, k_max + 1):
            toks = torch.randint(0, V, (k - 1,), generator=g)
            par = torch.arange(-1, k - 2)
            backend.score(toks, par)  # warm-up
            ts = []
            for _ in range(reps):
                t0 = time.perf_counter()
                backend.score(toks, par)
                ts.append(time.perf_counter() - t0)
            times.append(sorted(ts)[len(ts) // 2])
        return CostCurve([t / times[0] for t in times], times[0])

    @staticmethod
    def cached(backend, model_id: str, k_max: int = 12) -> "CostCurve":
        """Load the curve for this backend/model/machine from the disk cache, measuring it if absent."""
        threads = getattr(backend, "n_threads", torch.get_num_threads())
        if os.path.isfile(model_id):  # a rewritten file is another model: measure again
            st = os.stat(model_id)
            model_id = f"{os.path.abspath(model_id)}|{st.st_size}|{int(st.st_mtime)}"
        key = f"{backend.name}|{model_id}|{threads}|{platform.machine()}|{platform.processor()}|{os.cpu_count()}"
        path = cache_dir() / f"tk-{hashlib.sha1(key.encode()).hexdigest()[:16]}.json"
        try:
            d = json.loads(path.read_text())
            if len(d["T"]) >= k_max:
                return CostCurve(d["T"], d["step_s"])
        except (OSError, ValueError, KeyError):
            pass
        curve = CostCurve.measure(backend, k_max)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"key": key, "T": curve.T, "step_s": curve.step_s}))
        except OSError:
            pass
        return curve


@dataclass
class Controller:
    curve: CostCurve
    max_gamma: int = 8
    fixed_gamma: int | None = None  # the user's --gamma: always draft this far (no cost model)
    draft_cost: float = 0.0  # cost of drafting + verifying one token beyond the target pass, in plain steps
    learn_cost: bool = True  # update draft_cost from the times the engine reports (`observe_cost`)
    margin: float = 1.03  # speculate only when expected >= margin x plain decoding's rate
    prior_strength: float = 8.0  # pseudo-observations behind the prior mean of each bucket
    explore_every: int = 32  # a bucket judged not worth it is still probed this often
    counts: dict = field(default_factory=dict)  # bucket -> (accepted, rejected)
    _idle: dict = field(default_factory=dict)  # bucket -> opportunities since the last probe

    @staticmethod
    def prior_mean(bucket) -> float:
        """Prior per-token acceptance: longer n-gram matches are likelier to continue (0.5 .. 0.9).

        A bucket is the match length m, or (sampling, m): a sampled target (temperature > 0)
        accepts a point-mass draft only with probability p(x), so its prior is lower (0.4 .. 0.7).
        """
        sampling, m = bucket if isinstance(bucket, tuple) else (False, bucket)
        return min(0.7, 0.4 + 0.04 * m) if sampling else min(0.9, 0.5 + 0.05 * m)

    def alpha(self, bucket: int) -> float:
        """Posterior mean of the per-token acceptance in this bucket (Beta prior + counts)."""
        a, r = self.counts.get(bucket, (0, 0))
        m, n = self.prior_mean(bucket), self.prior_strength
        return (m * n + a) / (n + a + r)

    def rate(self, gamma: int, alpha: float) -> float:
        """Expected tokens per plain-step time when drafting gamma tokens."""
        if gamma == 0:
            return 1.0
        expect = gamma + 1 if alpha >= 1 else (1 - alpha ** (gamma + 1)) / (1 - alpha)
        return expect / (self.curve(gamma + 1) + gamma * self.draft_cost)

    def choose(self, bucket: int = 0, available: int | None = None) -> int:
        """Draft length for this iteration (0 = plain decoding); `available` caps it (e.g. match length)."""
        cap = self.max_gamma if available is None else min(self.max_gamma, available)
        if self.fixed_gamma is not None:
            return min(self.fixed_gamma, cap)
        a = self.alpha(bucket)
        best, best_rate = 0, self.margin
        for g in range(1, cap + 1):
            r = self.rate(g, a)
            if r > best_rate:
                best, best_rate = g, r
        if best == 0 and cap > 0:  # keep learning: an estimate that is never tested never recovers
            self._idle[bucket] = self._idle.get(bucket, 0) + 1
            if self._idle[bucket] >= self.explore_every:
                self._idle[bucket] = 0
                return min(2, cap)
        return best

    def observe_cost(self, gamma: int, seconds: float) -> None:
        """Time spent beyond the target's pass (drafting + verification) on an iteration drafting gamma
        tokens; draft_cost follows it as a moving average per drafted token, in plain-step units.

        The cost curve times the target alone; on 2 CPU cores verification at temperature > 0 adds
        ~0.1 ms per drafted token (about 1% of a step each), enough to tip short drafts.
        """
        if self.learn_cost and gamma > 0 and self.curve.step_s > 0:
            self.draft_cost += 0.1 * (seconds / (gamma * self.curve.step_s) - self.draft_cost)

    def update(self, bucket: int, tried: int, accepted: int) -> None:
        """tried draft positions on the verified path, of which `accepted` were accepted."""
        a, r = self.counts.get(bucket, (0, 0))
        self.counts[bucket] = (a + accepted, r + (tried - accepted > 0))
