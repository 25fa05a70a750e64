"""``verispec lab coupling``: Pr[a = b] against TV(P, Q) for couplings with and without communication.

Daliri, Musco, Suresh, arXiv 2408.07978 (ALGORITHMS.md section 5): Alice draws a ~ P, Bob b ~ Q from shared
randomness without communicating. Four curves per pair, each as an exact formula and as a simulation:

* optimal coupling (full knowledge): ``1 - TV`` (formula only: it is the maximal coupling's diagonal mass);
* Gumbel / exponential race: ``sum_x 1 / sum_y max(P_y/P_x, Q_y/Q_x)``;
* weighted MinHash (dart throwing): ``sum_x [min + (P-Q)+ Q + (Q-P)+ P] / sum max``;
* the worst-case guarantee ``(1 - TV) / (1 + TV)`` (formula only).

The papers' Pareto claim (v4): Gumbel >= weighted MinHash on every pair; checked on every pair here.
Simulations must agree with the formulas within ``Z_MAX`` binomial standard errors.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from ..coupling import (
    gumbel_coupled_sample,
    gumbel_match_prob,
    match_lower_bound,
    tv,
    wmh_coupled_sample,
    wmh_match_prob,
)
from .pairs import load_real_pairs, lump_top, random_pairs
from .report import new_figure, out_dir, progress, save_figure, write_table

Z_MAX = 5.0  # simulation vs formula: |sim - exact| <= Z_MAX * sqrt(e (1 - e) / n) + 1e-9
TV_BINS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)


def exact_row(P: torch.Tensor, Q: torch.Tensor) -> dict[str, np.ndarray]:
    """Exact curves for pairs P, Q: [n, V]. Returns arrays [n] keyed by curve name."""
    return {"tv": tv(P, Q).numpy(), "optimal": (1 - tv(P, Q)).numpy(), "gumbel": gumbel_match_prob(P, Q).numpy(),
            "wmh": wmh_match_prob(P, Q).numpy(), "bound": match_lower_bound(P, Q).numpy()}


def simulate_pair(P: torch.Tensor, Q: torch.Tensor, n_sim: int, gen: torch.Generator) -> tuple[float, float]:
    """Monte-Carlo Pr[a = b] of Gumbel and weighted MinHash for one pair. P, Q: [V]. Returns (gumbel, wmh)."""
    V = P.shape[-1]
    u = torch.rand(n_sim, V, dtype=torch.float64, generator=gen).clamp_min(1e-300)  # [n_sim, V] shared uniforms
    a, b = gumbel_coupled_sample(P, Q, u)
    a2, b2 = wmh_coupled_sample(P.expand(n_sim, V), Q.expand(n_sim, V), gen)
    return float((a == b).double().mean()), float((a2 == b2).double().mean())


def z_score(sim: np.ndarray, exact: np.ndarray, n_sim: int) -> np.ndarray:
    """|sim - exact| in binomial standard errors (floor 1e-9 on the error, 0.5/n on the variance)."""
    var = np.maximum(exact * (1 - exact), 0.5 / n_sim) / n_sim
    return np.maximum(np.abs(sim - exact) - 1e-9, 0) / np.sqrt(var)


def row_z(r: dict) -> float:
    """Worst simulation z-score of one row (Gumbel and WMH against their exact values on the simulated pair)."""
    return float(max(z_score(np.array([r[s]]), np.array([r[e]]), r["n_sim"])[0]
                     for s, e in (("gumbel_sim", "gumbel_ref"), ("wmh_sim", "wmh_ref"))))


def _measure(source: str, P: torch.Tensor, Q: torch.Tensor, n_sim: int, gen: torch.Generator,
             show_progress: bool, P_sim: torch.Tensor | None = None, Q_sim: torch.Tensor | None = None) -> list[dict]:
    """Per-pair rows: exact curves on (P, Q) [n, V]; simulation (and its own exact reference) on (P_sim, Q_sim)."""
    P_sim = P if P_sim is None else P_sim
    Q_sim = Q if Q_sim is None else Q_sim
    ex, ex_sim = exact_row(P, Q), exact_row(P_sim, Q_sim)
    rows = []
    for i in progress(range(P.shape[0]), f"simulate {source}", enabled=show_progress):
        g, w = simulate_pair(P_sim[i], Q_sim[i], n_sim, gen)
        rows.append({"source": source, "pair": i, **{k: float(v[i]) for k, v in ex.items()},
                     "gumbel_sim": g, "wmh_sim": w, "gumbel_ref": float(ex_sim["gumbel"][i]),
                     "wmh_ref": float(ex_sim["wmh"][i]), "n_sim": n_sim})
        rows[-1]["sim_z"] = row_z(rows[-1])
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Mean of every curve per (source, TV bin), plus the worst simulation z-score and Pareto violations."""
    out = []
    for source in dict.fromkeys(r["source"] for r in rows):
        rs = [r for r in rows if r["source"] == source]
        for lo, hi in itertools.pairwise(TV_BINS):
            b = [r for r in rs if lo <= r["tv"] < hi]
            if not b:
                continue
            m = {k: float(np.mean([r[k] for r in b])) for k in ("tv", "optimal", "gumbel", "gumbel_sim", "wmh",
                                                                 "wmh_sim", "bound")}
            out.append({"source": source, "tv_bin": f"[{lo:.2f},{hi:.2f})", "n": len(b), **m,
                        "max_z": max(r["sim_z"] for r in b),
                        "gumbel<wmh": sum(r["gumbel"] < r["wmh"] - 1e-12 for r in b)})
    return out


def _plot(rows: list[dict], out, name: str) -> str:
    sources = list(dict.fromkeys(r["source"] for r in rows))
    real = [s for s in sources if not s.startswith("random")]
    panels = [[s for s in sources if s.startswith("random")]] + ([real] if real else [])
    fig, axes = new_figure(len(panels))
    t = np.linspace(0, 1, 101)
    for ax, group in zip(axes, panels):
        rs = [r for r in rows if r["source"] in group]
        x = np.array([r["tv"] for r in rs])
        ax.plot(t, 1 - t, "k-", lw=1.2, label="optimal 1 - TV")
        ax.plot(t, (1 - t) / (1 + t), "k--", lw=1.2, label="bound (1-TV)/(1+TV)")
        ax.scatter(x, [r["gumbel"] for r in rs], s=9, c="tab:blue", label="Gumbel (exact)")
        ax.scatter(x, [r["wmh"] for r in rs], s=9, c="tab:orange", label="weighted MinHash (exact)")
        ax.scatter(x, [r["gumbel_sim"] for r in rs], s=14, marker="x", c="navy", lw=0.6, label="Gumbel (sim)")
        ax.scatter(x, [r["wmh_sim"] for r in rs], s=14, marker="+", c="darkred", lw=0.6, label="WMH (sim)")
        ax.set(xlabel="TV(P, Q)", ylabel="Pr[a = b]", xlim=(0, 1), ylim=(0, 1.02),
               title=("random pairs, " + ", ".join(g.replace("random ", "") for g in group))
               if group[0].startswith("random") else f"SmolLM2-135M next-token pairs ({len(group)} families)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    return str(save_figure(fig, out, name))


def run(out: str = "lab_out", seed: int = 0, quick: bool = False, n_pairs: int | None = None, real: bool = True,
        show_progress: bool = True, V: int = 10) -> dict:
    """Run the experiment, write ``coupling_pairs.{csv,md}``, ``coupling.{csv,md,png}``; return headline numbers."""
    out = out_dir(out)
    n_pairs = n_pairs or (40 if quick else 200)
    if n_pairs < 1:
        raise ValueError("--pairs must be >= 1")
    n_sim = 4000 if quick else 20000
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    rows = []
    for alpha in (1.0, 0.3):
        P, Q = random_pairs(n_pairs // 2 or 1, V, rng, alpha=alpha)
        rows += _measure(f"random V={V} Dir({alpha})", P, Q, n_sim, gen, show_progress)
    if real:
        for fam in load_real_pairs(*((3, 8) if quick else (12, 16)), seed=seed, show_progress=show_progress):
            P, Q = fam.probs()
            Ps, Qs = lump_top(P, Q, 255)  # simulation on the top-255 tokens + one "rest" bucket
            rows += _measure(fam.name, P, Q, n_sim // 4, gen, show_progress, Ps, Qs)
    summary = summarize(rows)
    write_table(rows, out, "coupling_pairs", "Pr[a = b] per pair (exact formulas and simulation)")
    write_table(summary, out, "coupling", "Pr[a = b] against TV, mean per TV bin")
    png = _plot(rows, out, "coupling")
    worst_z = max(r["sim_z"] for r in rows)
    return {"png": png, "pairs": len(rows), "pareto_violations": sum(r["gumbel"] < r["wmh"] - 1e-12 for r in rows),
            "worst_sim_z": float(worst_z), "summary": summary, "z_max": Z_MAX,
            "ok": bool(worst_z <= Z_MAX and all(r["gumbel"] >= r["wmh"] - 1e-12 for r in rows))}
