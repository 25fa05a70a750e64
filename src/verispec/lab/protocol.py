"""``verispec lab protocol``: near-optimal coupling with a little communication, bits counted one by one.

Daliri, Musco, Suresh, arXiv 2408.07978 (v2 abstract): "for distributions over n items, there exists a scheme that
uses just O(log(n/eps)) bits of communication to achieve Pr[a = b] = 1 - TV - eps". The paper's protocol text could
not be retrieved (only abstracts were reachable; ALGORITHMS.md section 5(c) marks it [not found]). This module
implements a protocol DERIVED here that keeps both marginals exact and reaches ``Pr[a = b] = 1 - TV`` exactly: the
maximal coupling of speculative sampling, run between two parties who each know only their own distribution.

Shared randomness: uniforms w_0, w_1, ... (inverse-CDF sampling, same law as a Gumbel race), u_0, v_1, v_2, ...

1. Alice draws ``a ~ P`` from w_0 and sends ``a``: ceil(log2 n) bits.
2. Accept test ``u_0 P(a) < Q(a)`` (accept with prob. min(1, Q(a)/P(a))): Alice holds ``s = u_0 P(a)``, Bob
   holds ``t = Q(a)``; Alice sends the binary digits of s one at a time and Bob answers "same / stop" after each,
   until the first digit where s and t differ: ``2 k`` bits (k = first differing digit). If accepted, b = a.
3. Otherwise Bob samples the residual ``norm((Q - P)+)`` by rejection: round j draws ``y_j ~ Q`` from w_j, Bob sends
   ``y_j`` (ceil(log2 n) bits), and the test ``P(y_j) < (1 - v_j) Q(y_j)`` (accept with prob. (1 - P/Q)+) is
   settled by the same digit exchange; the first accepted y_j is b.

Each round of step 3 accepts with probability TV and is reached with probability TV, so the expected number of
indices sent is exactly 2 (for TV > 0), and the expected total is about ``2 log2 n + 2 (H-ish digit terms)`` bits.
What this does NOT reproduce: the worst-case ``O(log(n/eps))`` bound. Capping the transcript at B bits leaves
``Pr[bits > B]`` (reported as ``overflow``) where b's marginal is no longer controlled; for small TV the rounds of
step 3 are geometric with mean 1/TV, so ``overflow`` decays like ``log n / B``, not like ``2^-B``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..coupling import gumbel_match_prob, tv, wmh_match_prob
from .pairs import load_real_pairs, random_pairs
from .report import new_figure, out_dir, progress, save_figure, write_table

EPS = (0.1, 0.03, 0.01)  # slack eps in "Pr[a = b] >= 1 - TV - eps" for the budget columns
_SCALE = 1100  # 2^-1074 is the smallest double: every double in [0, 1] is an integer multiple of 2^-1100


def index_bits(n: int) -> int:
    """Bits to send one item of an n-item alphabet: ``ceil(log2 n)`` (at least 1)."""
    if n < 1:
        raise ValueError("n must be >= 1")
    return max(1, math.ceil(math.log2(n)))


def first_differing_digit(s: float, t: float) -> int:
    """Position k >= 1 of the first binary digit where s, t in [0, 1] differ (exact, on the doubles' values).

    Equal values never differ: they return ``_SCALE`` (the exchange then ran through every digit; probability 0
    with continuous uniforms). ``ValueError`` outside [0, 1].
    """
    if not (0.0 <= s <= 1.0 and 0.0 <= t <= 1.0):
        raise ValueError(f"digits are exchanged for numbers in [0, 1], got {s}, {t}")
    S = (s.as_integer_ratio()[0] << _SCALE) // s.as_integer_ratio()[1]
    T = (t.as_integer_ratio()[0] << _SCALE) // t.as_integer_ratio()[1]
    return _SCALE if S == T else _SCALE - (S ^ T).bit_length() + 1


def compare_bits(s: float, t: float) -> int:
    """Bits to decide ``s < t`` between two parties: one digit and one "same/stop" reply per round."""
    return 2 * first_differing_digit(float(s), float(t))


def _draw(cdf: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling: item i with ``cdf[i-1] <= w < cdf[i]``. cdf: [n] (last entry 1); w: [m]."""
    return np.minimum(np.searchsorted(cdf, w, side="right"), cdf.size - 1)


def run_protocol(P: np.ndarray, Q: np.ndarray, n_trials: int, rng: np.random.Generator,
                 max_rounds: int = 100_000) -> dict[str, np.ndarray]:
    """Simulate the derived two-party maximal-coupling protocol (module doc) ``n_trials`` times.

    P: [n] Alice's distribution; Q: [n] Bob's (probability vectors). Returns arrays [n_trials]: ``a``, ``b``
    (outputs), ``bits`` (transcript length), ``rounds`` (residual rounds). Exact marginals a ~ P, b ~ Q.
    """
    P, Q = np.asarray(P, dtype=np.float64), np.asarray(Q, dtype=np.float64)
    if P.shape != Q.shape or P.ndim != 1 or (P < 0).any() or (Q < 0).any():
        raise ValueError("P and Q must be non-negative vectors of the same length")
    if abs(P.sum() - 1) > 1e-9 or abs(Q.sum() - 1) > 1e-9:
        raise ValueError("P and Q must sum to 1")
    nb = index_bits(P.size)
    cP, cQ = np.cumsum(P), np.cumsum(Q)
    cP[-1] = cQ[-1] = 1.0
    a = _draw(cP, rng.uniform(size=n_trials))  # Alice's sample, sent as an index
    u0 = rng.uniform(size=n_trials)
    s, t = u0 * P[a], Q[a]
    bits = nb + np.array([compare_bits(x, y) for x, y in zip(s, t)], dtype=np.int64)
    b = np.where(s < t, a, -1)
    rounds = np.zeros(n_trials, dtype=np.int64)
    for _ in range(max_rounds):
        todo = np.flatnonzero(b < 0)
        if todo.size == 0:
            break
        y = _draw(cQ, rng.uniform(size=todo.size))  # Bob's residual proposal y ~ Q, sent as an index
        s, t = P[y], (1 - rng.uniform(size=todo.size)) * Q[y]
        bits[todo] += nb + np.array([compare_bits(x, z) for x, z in zip(s, t)], dtype=np.int64)
        rounds[todo] += 1
        b[todo] = np.where(s < t, y, -1)
    if (b < 0).any():
        raise RuntimeError(f"residual sampling did not stop in {max_rounds} rounds")
    return {"a": a, "b": b, "bits": bits, "rounds": rounds}


def budget_curve(res: dict[str, np.ndarray], budgets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``Pr[a = b and bits <= B]`` and ``Pr[bits > B]`` for each budget B. budgets: [m]. Returns two [m] arrays."""
    hit = res["a"] == res["b"]
    within = res["bits"][None, :] <= budgets[:, None]  # [m, n_trials]
    return (within & hit[None, :]).mean(1), 1 - within.mean(1)


def _source_rows(name: str, P: torch.Tensor, Q: torch.Tensor, n_trials: int, rng, budgets: np.ndarray,
                 show_progress: bool) -> tuple[dict, np.ndarray, np.ndarray]:
    """Run the protocol on each pair of one source; return a summary row and mean budget curves."""
    match, over, bits, sim, eps_b = [], [], [], [], {e: [] for e in EPS}
    opt = (1 - tv(P, Q)).numpy()
    for i in progress(range(P.shape[0]), f"protocol {name}", enabled=show_progress):
        res = run_protocol(P[i].numpy(), Q[i].numpy(), n_trials, rng)
        m, o = budget_curve(res, budgets)
        match.append(m), over.append(o), bits.append(res["bits"]), sim.append(float((res["a"] == res["b"]).mean()))
        for e in EPS:  # smallest budget with Pr[a = b, bits <= B] >= 1 - TV - eps
            ok = np.flatnonzero(m >= opt[i] - e)
            eps_b[e].append(budgets[ok[0]] if ok.size else np.nan)
    allbits = np.concatenate(bits)
    row = {"source": name, "n": P.shape[-1], "pairs": P.shape[0], "trials": n_trials, "tv": float(tv(P, Q).mean()),
           "optimal": float(opt.mean()), "protocol_sim": float(np.mean(sim)),
           "gumbel_0bits": float(gumbel_match_prob(P, Q).mean()), "wmh_0bits": float(wmh_match_prob(P, Q).mean()),
           "index_bits": index_bits(P.shape[-1]), "mean_bits": float(allbits.mean()),
           "median_bits": float(np.median(allbits)), "p99_bits": float(np.percentile(allbits, 99)),
           **{f"B(eps={e})": float(np.nanmedian(eps_b[e])) for e in EPS}}
    return row, np.mean(match, 0), np.mean(over, 0)


def run(out: str = "lab_out", seed: int = 0, quick: bool = False, n_pairs: int | None = None, real: bool = True,
        show_progress: bool = True) -> dict:
    """Write ``protocol.{csv,md,png}`` and ``protocol_curve.{csv,md}``; return headline numbers."""
    out = out_dir(out)
    n_pairs = n_pairs or (8 if quick else 40)
    if n_pairs < 1:
        raise ValueError("--pairs must be >= 1")
    n_trials = 1000 if quick else 4000
    rng = np.random.default_rng(seed)
    budgets = np.arange(0, 201, 2)
    sources = [(f"random n={n}", *random_pairs(n_pairs, n, rng)) for n in (10, 100, 1000)]
    if real:
        for fam in load_real_pairs(*((3, 8) if quick else (8, 16)), seed=seed, show_progress=show_progress)[:2]:
            sources.append((fam.name, *fam.probs()))
    rows, curves = [], []
    for name, P, Q in sources:
        row, m, o = _source_rows(name, P, Q, n_trials if name.startswith("random") else n_trials // 4, rng,
                                 budgets, show_progress)
        rows.append(row)
        curves += [{"source": name, "budget_bits": int(B), "pr_match_within_B": float(x), "pr_overflow": float(y)}
                   for B, x, y in zip(budgets, m, o)]
    write_table(rows, out, "protocol", "Derived low-communication maximal coupling: summary per source")
    write_table(curves, out, "protocol_curve", "Pr[a = b and transcript <= B bits] and Pr[transcript > B]")
    fig, axes = new_figure(2)
    for k, row in enumerate(rows):
        c = [r for r in curves if r["source"] == row["source"]]
        line, = axes[0].plot(budgets, [r["pr_match_within_B"] for r in c], label=row["source"])
        axes[0].axhline(row["optimal"], color=line.get_color(), ls=":", lw=1)
        axes[0].plot([0], [row["gumbel_0bits"]], "o", color=line.get_color(), ms=5)
        axes[0].plot([0], [row["wmh_0bits"]], "s", color=line.get_color(), ms=4, mfc="none")
        axes[1].semilogy(budgets, np.maximum([r["pr_overflow"] for r in c], 1e-5), label=row["source"])
    axes[0].set(xlabel="bit budget B", ylabel="Pr[a = b, transcript <= B]",
                title="dotted: 1 - TV; o Gumbel, [] WMH (0 bits)")
    axes[1].set(xlabel="bit budget B", ylabel="Pr[transcript > B]", title="overflow (b's law uncontrolled)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    png = save_figure(fig, out, "protocol")
    return {"png": str(png), "rows": rows}
