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
import time
from dataclasses import dataclass, field

import torch

from ..backends.base import cpu_key
from ..cache import cache_dir, file_digest


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
    def measure(backend, k_max: int = 12, reps: int = 7, context: int = 128) -> "CostCurve":
        """Time chains of k - 1 nodes after a `context`-token prefix; restores nothing: call before `reset` of a
        real request. Every repetition visits every k, in an order that rotates, so a machine's drift during the
        measurement hits all k alike; the medians are then made non-decreasing in k (`monotone`): scoring more
        tokens does not cost less, and on a flat curve (a torch target: T(12) ~ 1.2) a noisy dip or bump would
        otherwise shape the trees the controller prices with it."""
        V = backend.vocab_size
        g = torch.Generator().manual_seed(0)
        prefix = torch.randint(0, V, (context,), generator=g).tolist()
        backend.reset(prefix)
        chains = [(torch.randint(0, V, (k - 1,), generator=g), torch.arange(-1, k - 2)) for k in range(1, k_max + 1)]
        for toks, par in chains:
            backend.score(toks, par)  # warm-up
        ts: list[list[float]] = [[] for _ in chains]
        for r in range(reps):
            for i in [(j + r) % k_max for j in range(k_max)]:
                t0 = time.perf_counter()
                backend.score(*chains[i])
                ts[i].append(time.perf_counter() - t0)
        times = monotone([sorted(t)[len(t) // 2] for t in ts])
        return CostCurve([t / times[0] for t in times], times[0])

    @staticmethod
    def cached(backend, model_id: str, k_max: int = 12) -> "CostCurve":
        """Load the curve for this backend/model/machine from the disk cache, measuring it if absent."""
        threads = getattr(backend, "n_threads", torch.get_num_threads())
        variant = getattr(backend, "cost_key", "")  # torch: dtype and forward; llama.cpp: flash attention
        if os.path.isfile(model_id):  # by content: a rewritten file is another model, a reinstall is not
            model_id = file_digest(model_id)
        # v2: measured with interleaved repetitions and made monotone; curves measured before are measured again.
        # The CPU by `cpu_key` (model, family, flags): platform.processor() is "x86_64" on Linux, which let two CPU
        # types sharing a cache folder read each other's curves
        key = f"v2|{backend.name}|{variant}|{model_id}|{threads}|{cpu_key()}|{os.cpu_count()}"
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


def monotone(y: list[float]) -> list[float]:
    """The non-decreasing sequence closest to y in squared error (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [sum, count]
    for v in y:
        blocks.append([v, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, n = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += n
    return [s / n for s, n in blocks for _ in range(n)]


@dataclass
class Controller:
    curve: CostCurve
    max_gamma: int = 8
    fixed_gamma: int | None = None  # the user's --gamma: always draft this far (no cost model)
    draft_cost: float = 0.0  # prior cost of drafting + verifying one token beyond the target pass, in plain steps
    learn_cost: bool = True  # learn that cost (a fixed and a per-token part) from `observe_cost`
    margin: float = 1.03  # speculate only when expected >= margin x plain decoding's rate
    prior_strength: float = 8.0  # pseudo-observations behind the prior mean of each bucket
    explore_every: int = 32  # a bucket judged not worth it is still probed this often
    probe_backoff: int = 16  # a draft model's bucket: probes at most this many times rarer (`_probe_every`)
    _every: dict = field(default_factory=dict)  # draft-model bucket -> its probe interval, where backed off
    counts: dict = field(default_factory=dict)  # bucket -> (accepted, rejected)
    _idle: dict = field(default_factory=dict)  # bucket -> opportunities since the last probe
    _skipped: dict = field(default_factory=dict)  # mode -> searches skipped by `worth_drafting` since one ran
    _overhead: dict = field(default_factory=dict)  # (sampling?, model draft?) -> Overhead
    scale: float = 1.0  # learnt: the measured extra cost of a k-token pass over the curve's T(k) - 1
    scale_prior: float = 0.05  # weight of scale = 1 against the passes' spread in T(k) - 1 (sum of squares)
    _passes: DecayedLine = field(default_factory=lambda: DecayedLine(0.98))  # x = T(k) - 1, y = a pass's seconds
    search_prior: float = 0.05  # what a prompt-lookup search is worth before any is seen, in plain steps
    search_decay: float = 0.99  # weight of the earlier searches in that worth (a window of ~100)
    search_charge: float = 2.0  # a search that drafts nothing costs this many times its own time (`observe_search`)
    _search: dict = field(default_factory=dict)  # mode -> decayed mean worth of a prompt-lookup search
    recheck: int = 8  # `worth_drafting`'s finding that no bucket pays holds this many calls
    _recheck: dict = field(default_factory=dict)  # (mode, model) -> calls left before that finding is priced again

    @staticmethod
    def prior_mean(bucket) -> float:
        """Prior per-token acceptance: longer n-gram matches are likelier to continue (0.5 .. 0.9).

        A bucket is the match length m, or (mode, m), the mode being 0 for a greedy target and its
        temperature (`mode`) for a sampled one: a sampled target accepts a point-mass draft only with
        probability p(x), so at temperature 1 the prior is lower (0.3 .. 0.6; measured on Spec-Bench, short
        matches are accepted less than 40% of the time). Lower temperatures sharpen p towards its argmax, so
        the prior moves linearly from the greedy one at 0 to that at 1 (at 0.2, as llama.cpp samples by
        default: 0.46 .. 0.84): a prior of temperature 1 kept every such request from drafting at all.
        """
        t, m = bucket if isinstance(bucket, tuple) else (0.0, bucket)
        greedy, sampled = min(0.9, 0.5 + 0.05 * m), min(0.6, 0.3 + 0.04 * m)
        return greedy + (sampled - greedy) * min(float(t), 1.0)

    def alpha(self, bucket: int) -> float:
        """Posterior mean of the per-token acceptance in this bucket (Beta prior + counts)."""
        a, r = self.counts.get(bucket, (0, 0))
        m, n = self.prior_mean(bucket), self.prior_strength
        return (m * n + a) / (n + a + r)

    def rate(self, gamma: int, alpha: float, sampling: bool = False, model: bool = False,
             price: float | None = None) -> float:
        """Expected tokens per plain-step time when drafting gamma tokens (`model`: by a draft model,
        whose overhead is learnt apart from prompt lookup's); `price`: `price(gamma, sampling, model)` if the
        caller has it."""
        if gamma == 0:
            return 1.0
        return expected_tokens(gamma, alpha) / (self.price(gamma, sampling, model) if price is None else price)

    def price(self, gamma: int, sampling: bool = False, model: bool = False) -> float:
        """The cost, in plain steps, of an iteration verifying gamma draft tokens (or tree nodes): the target's
        pass over gamma + 1 rows as it costs now and the drafting + verification overhead learnt for that source
        (`model`: a draft model or head). Tree drafters size their trees by it (`Drafter.price`)."""
        return self._priced(gamma, *self._extra(sampling, model))

    def prices(self, cap: int, sampling: bool = False, model: bool = False) -> list[float]:
        """[price(1), .., price(cap)], the overhead's fit solved once (`choose` and `worth_drafting` price every
        draft length at every step: ~70 us a step in Python when each price solved it again)."""
        c0, c1 = self._extra(sampling, model)
        return [self._priced(g, c0, c1) for g in range(1, cap + 1)]

    def _priced(self, gamma: int, c0: float, c1: float) -> float:
        """`price` given the overhead's parts c0 (fixed) and c1 (per token)."""
        return self.cost(gamma + 1) + c0 + c1 * gamma

    def _extra(self, sampling: bool, model: bool) -> tuple[float, float]:
        """The drafting + verification overhead of a source, fixed and per token, in plain steps."""
        over = self._overhead.get((sampling, model))
        return over.parts() if over is not None and self.learn_cost else (0.0, self.draft_cost)

    def cost(self, k: int) -> float:
        """T(k) as it is now: 1 + scale * (T_curve(k) - 1)."""
        return 1.0 + self.scale * (self.curve(k) - 1.0)

    def observe_target(self, k: int, seconds: float) -> None:
        """The target's time for one pass over k tokens (k = 1: a plain step).

        The curve is measured once, at a 128-token context on an idle machine; a long prompt
        (attention over 1000+ tokens) or a busy machine makes a step and its extra tokens dearer. The
        controller fits the recent passes, plain steps among them, as seconds = t1 (1 + scale (T(k) - 1))
        by decayed least squares in x = T(k) - 1: the intercept is a plain step here and now, the slope
        over it the scale, so `price` charges drafts what they cost at this context. A drafter that
        rarely leaves a plain step (a head drafting at every position) is priced from its own passes of
        different sizes, not from a step timed at another context. Where the passes barely differ in
        size, the slope says little and `scale_prior` keeps the scale near 1.
        """
        if not self.learn_cost or seconds <= 0:
            return
        self._passes.add(self.curve(k) - 1.0, seconds)
        mx, my, var, cov = self._passes.moments()
        spread = self._passes.n * var  # sum of squares of x about its mean
        if spread <= 1e-12:
            return
        slope = cov / var
        step = my - slope * mx  # a plain step's time at the passes' contexts
        if step <= 0:
            return
        fit = min(max(slope / step, 0.25), 4.0)
        self.scale = (fit * spread + self.scale_prior) / (spread + self.scale_prior)

    def choose(self, bucket: int = 0, available: int | None = None) -> int:
        """Draft length for this iteration (0 = plain decoding); `available` caps it (e.g. match length)."""
        cap = self.max_gamma if available is None else min(self.max_gamma, available)
        if self.fixed_gamma is not None:
            return min(self.fixed_gamma, cap)
        a, sampling, model = self.alpha(bucket), _sampling(bucket), _model(bucket)
        best, best_rate = 0, self.margin
        for g, price in enumerate(self.prices(cap, sampling, model), 1):
            r = self.rate(g, a, price=price)
            if r > best_rate:
                best, best_rate = g, r
        if best == 0 and cap > 0:  # keep learning: an estimate that is never tested never recovers
            self._idle[bucket] = self._idle.get(bucket, 0) + 1
            every = self._probe_every(bucket)
            if self._idle[bucket] >= every:
                self._idle[bucket] = 0
                if model:  # a draft model's probe pays a catch-up on the tokens decoded since: back off
                    self._every[bucket] = min(2 * every, self.probe_backoff * self.explore_every)
                return min(2, cap)
        elif best > 0:
            self._every.pop(bucket, None)
        return best

    def _probe_every(self, bucket) -> int:
        """Opportunities between two probes of a bucket judged not worth it: explore_every, doubled after each
        probe of a draft model's bucket that left it so (up to probe_backoff times). On 2 cores of a Zen 5 a Q4_0
        copy of the embedded model drafting for its BF16 target never paid, and its probes, each catching up on
        32 tokens (~28 ms, 2.6 steps), made `--drafter model` 0.76x and `ngram+model` 0.86x the plain loop at
        temperature 1 (docs/speed.md §33)."""
        return self._every.get(bucket, self.explore_every)

    def observe_cost(self, gamma: int, seconds: float, sampling: bool = False, model: bool = False) -> None:
        """Time spent beyond the target's pass (drafting + verification) on an iteration drafting gamma
        tokens, learnt per target mode (greedy / sampled) and draft source (prompt lookup, ~free; a
        draft model, ~a fifth of a step per token) as a fixed plus a per-token part, in plain steps.

        The cost curve times the target alone. On 2 CPU cores greedy verification adds ~0.05 ms, while
        sampled verification adds ~1 ms per iteration (probabilities for every row, the residual on a
        rejection): an eighth of a step, enough to make short drafts lose.
        """
        if self.learn_cost and gamma > 0 and self.curve.step_s > 0:
            self._overhead.setdefault((sampling, model), Overhead()).add(gamma, seconds / self.curve.step_s)

    def worth_drafting(self, mode: float, available: int, model: bool = False) -> bool:
        """Whether any prompt-lookup bucket of this mode (`mode`: 0 greedy, else the temperature; True / False
        work as 1 / 0) or, with `model`, the draft-model fallback's could choose a draft, or is due a probe: if
        not, the engine skips the search. Without `model`, a mode whose recent searches lost more time than their
        drafts saved (`observe_search`) is searched only once in explore_every."""
        if self.fixed_gamma is not None or available <= 0:
            return available > 0
        if model or self._search.get(mode, self.search_prior) >= 0:  # else this mode's searches lost time of late
            if self._could_pay(mode, min(self.max_gamma, available), model):
                return True
            if any(n + 1 >= self._probe_every(b) for b, n in self._idle.items()
                   if _mode(b) == mode and (model or not _model(b))):
                return True
        # Skipped searches never reach `choose`, whose probes count its calls: without letting one search in
        # explore_every through, a mode whose prior says no (a sampled target on a steep curve) would never
        # draft, whatever its drafts would have scored. A bucket is so probed every ~explore_every^2 steps.
        n = self._skipped.get(mode, 0) + 1
        self._skipped[mode] = n % self.explore_every
        return n >= self.explore_every

    def _could_pay(self, mode: float, cap: int, model: bool) -> bool:
        """Whether a bucket of this mode could choose a draft of at most cap tokens now. A no is kept for the next
        `recheck` - 1 calls: pricing every draft length takes ~30 us, a third of a search, at every step where
        nothing is drafted (temperature 1), and the estimates behind it move slowly."""
        wait = self._recheck.get((mode, model), 0)
        if wait > 0:
            self._recheck[(mode, model)] = wait - 1
            return False
        lookup = max([self.alpha((mode, 8))] + [self.alpha(b) for b in self.counts
                                                if _mode(b) == mode and not _model(b)])
        for alpha, src in [(lookup, False)] + [(self.alpha((mode, 0)), True)] * model:
            prices = self.prices(cap, bool(mode), src)
            if any(self.rate(g, alpha, price=p) > self.margin for g, p in enumerate(prices, 1)):
                return True
        self._recheck[(mode, model)] = self.recheck - 1
        return False

    def observe_search(self, mode: float, seconds: float = 0.0, gained: float | None = None) -> None:
        """What one prompt-lookup search of this mode was worth, in plain steps, for `worth_drafting`: a search
        that drafted nothing (no match, or `choose` said no) lost its time, charged `search_charge` times over (on
        2 cores a step after a search ran 0.1-0.5 ms slower than one without, against the search's own ~0.1 ms:
        the search's data evicts the next step's); one that drafted `gained` = its draft's expected `gain` (not
        the tokens accepted: a rejected draft is the acceptance model's risk, which `update` learns). At
        temperature 1 the embedded model's prompt lookup drafted at under 5% of the searches and accepted ~1% of
        the tokens: while the decayed mean is negative, only one search in explore_every runs."""
        v = -self.search_charge * seconds / self.curve.step_s if gained is None else gained
        d = self.search_decay
        self._search[mode] = d * self._search.get(mode, self.search_prior) + (1 - d) * v

    def gain(self, bucket, gamma: int, nodes: int | None = None) -> float:
        """Expected tokens of an iteration drafting a gamma-deep draft of `nodes` nodes (default gamma) from this
        bucket, less its `price`: what it saves over plain decoding, in plain steps (> 0 where `choose` drafts)."""
        nodes = gamma if nodes is None else nodes
        return expected_tokens(gamma, self.alpha(bucket)) - self.price(nodes, _sampling(bucket), _model(bucket))

    def update(self, bucket: int, tried: int, accepted: int) -> None:
        """tried draft positions on the verified path, of which `accepted` were accepted."""
        a, r = self.counts.get(bucket, (0, 0))
        self.counts[bucket] = (a + accepted, r + (tried - accepted > 0))


def expected_tokens(gamma: int, alpha: float) -> float:
    """Tokens an iteration drafting gamma tokens yields, each accepted with probability alpha given its parent, the
    bonus token counted: (1 - alpha^(gamma+1)) / (1 - alpha) (Leviathan et al. 2023, eq. 1)."""
    return gamma + 1 if alpha >= 1 else (1 - alpha ** (gamma + 1)) / (1 - alpha)


def mode(params) -> float:
    """The controller's sampling mode for these `SamplingParams`: 0 for a greedy target, else its temperature to
    one decimal (at least 0.1, at most 2): buckets of different modes keep apart counts, as a server's requests at
    temperatures 0.2 and 1 accept drafts at different rates."""
    return 0.0 if params.greedy else max(0.1, round(min(float(params.temperature), 2.0), 1))


def _mode(bucket) -> float:
    return float(bucket[0]) if isinstance(bucket, tuple) else 0.0


def _sampling(bucket) -> bool:
    return _mode(bucket) > 0


def _model(bucket) -> bool:
    """Match length 0: the draft came from a draft model, not from prompt lookup."""
    return (bucket[1] if isinstance(bucket, tuple) else bucket) == 0


@dataclass
class DecayedLine:
    """Weighted sums for least squares y = a + b x over recent observations, each older one weighing `decay`
    times less than the next: the controller's drafting overhead (`Overhead`) and its cost scale both fit one."""

    decay: float = 0.97
    n: float = 0.0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0

    def add(self, x: float, y: float) -> None:
        d = self.decay
        self.n, self.sx, self.sy = d * self.n + 1, d * self.sx + x, d * self.sy + y
        self.sxx, self.sxy = d * self.sxx + x * x, d * self.sxy + x * y

    def moments(self) -> tuple[float, float, float, float]:
        """(mean x, mean y, variance of x, covariance of x and y), weighted; call once n > 0."""
        mx, my = self.sx / self.n, self.sy / self.n
        return mx, my, self.sxx / self.n - mx * mx, self.sxy / self.n - mx * my


@dataclass
class Overhead(DecayedLine):
    """y = c0 + c1 * gamma by least squares over recent iterations (weights decay by `decay` per step)."""

    def parts(self) -> tuple[float, float]:
        """(c0, c1), both >= 0; (0, 0) before any observation."""
        if self.n <= 0:
            return 0.0, 0.0
        mg, my, var, cov = self.moments()
        if var <= 1e-9:  # one draft length seen so far: the parts cannot be told apart; charge it per
            return 0.0, max(0.0, my) / mg  # token, as a draft model costs (a fixed charge would stop it)
        c1 = max(0.0, cov / var)
        return max(0.0, my - c1 * mg), c1
