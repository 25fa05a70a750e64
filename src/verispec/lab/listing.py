"""``verispec lab list``: multi-draft acceptance against the number of drafts K (1 to 20).

Rowan, Phan, Khisti, arXiv 2506.05632 (ALGORITHMS.md section 6): the toy study compares Gumbel-max list sampling
(GLS, Algorithm 1) with SpecInfer, SpecTr and the optimal K-draft acceptance on 100 random pairs with V = 10,
K = 1..20 (reported only as a figure). Here, for K i.i.d. drafts from q and target p:

* GLS: Monte Carlo of ``Pr[Y in {X_1..X_K}]`` with :func:`verispec.coupling.gls_sample`, one noise tensor
  [n_sim, 20, V] per pair whose first K rows serve every K (nested, so the curve is monotone in K);
* list-matching lower bound (Theorem 1, derived form): :func:`verispec.coupling.list_matching_bound`;
* SpecInfer (Miao et al. arXiv 2305.09781, Algorithm 2 with K i.i.d. children, "RRS"): exact, :func:`specinfer_acceptance`;
* SpecTr K-SEQ (Sun et al. arXiv 2310.15141): exact, :func:`verispec.coupling.kseq_acceptance`;
* optimal (OTM LP value, subset dual, ALGORITHMS.md section 7): :func:`verispec.coupling.optimal_acceptance`.

Checks: GLS >= bound and GLS <= optimal, each within ``Z_MAX`` Monte-Carlo standard errors, on every pair.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..coupling import (
    gls_sample,
    kseq_acceptance,
    list_matching_bound,
    optimal_acceptance,
)
from ..coupling.maximal import residual
from .pairs import load_real_pairs, lump_top, random_pairs
from .report import new_figure, out_dir, progress, save_figure, write_table

Z_MAX = 5.0
METHODS = ("gls", "lml_bound", "specinfer", "spectr", "optimal")


def specinfer_acceptance(p: Tensor, q: Tensor, K: int) -> Tensor:
    """Exact acceptance of SpecInfer's multi-step sampling with K i.i.d. drafts from q (arXiv 2305.09781, Alg. 2).

    Trial i accepts draft x ~ q with prob. ``min(1, p_i(x)/q(x))``, i.e. with total prob. ``beta_i = sum min(p_i, q)``;
    on rejection ``p_{i+1} = norm((p_i - q)+)``. Acceptance ``= 1 - prod_i (1 - beta_i)``.
    p: [..., V] target; q: [..., V] draft. Returns [...].
    """
    if int(K) != K or K < 1:
        raise ValueError("K must be an integer >= 1")
    miss = torch.ones(p.shape[:-1], dtype=torch.float64)
    pi = p.double()
    for _ in range(K):
        miss = miss * (1 - torch.minimum(pi, q).sum(-1))
        pi, _ = residual(pi, q)
    return 1 - miss


def gls_acceptance_mc(p: Tensor, q: Tensor, K_max: int, n_sim: int, gen: torch.Generator) -> Tensor:
    """Monte-Carlo GLS acceptance for K = 1..K_max with nested noise rows. p, q: [V]. Returns [K_max]."""
    E = -torch.log(torch.rand(n_sim, K_max, p.shape[-1], dtype=torch.float64, generator=gen).clamp_min(1e-300))
    acc = []
    for K in range(1, K_max + 1):
        Y, X = gls_sample(p, q, E[:, :K])  # Y [n_sim], X [n_sim, K]
        acc.append((X == Y[:, None]).any(-1).double().mean())
    return torch.stack(acc)


def measure(name: str, p: Tensor, q: Tensor, K_max: int, n_sim: int, gen: torch.Generator,
            show_progress: bool) -> list[dict]:
    """Rows (source, pair, K, each method) for pairs p, q: [n, V]."""
    rows = []
    exact = {K: (list_matching_bound(p, q, K), specinfer_acceptance(p, q, K), kseq_acceptance(p, q, K),
                 optimal_acceptance(p, q, K)) for K in range(1, K_max + 1)}
    for i in progress(range(p.shape[0]), f"GLS {name}", enabled=show_progress):
        g = gls_acceptance_mc(p[i], q[i], K_max, n_sim, gen)
        for K in range(1, K_max + 1):
            lml, rrs, kseq, opt = (float(x[i]) for x in exact[K])
            rows.append({"source": name, "pair": i, "K": K, "gls": float(g[K - 1]), "n_sim": n_sim,
                         "lml_bound": lml, "specinfer": rrs, "spectr": kseq, "optimal": opt})
    return rows


def violations(rows: list[dict]) -> dict[str, int]:
    """Pairs x K where GLS is more than Z_MAX standard errors below the bound or above the optimum."""
    def se(r):
        return max(r["gls"] * (1 - r["gls"]), 0.5 / r["n_sim"]) ** 0.5 / r["n_sim"] ** 0.5
    return {"below_bound": sum(r["gls"] < r["lml_bound"] - Z_MAX * se(r) for r in rows),
            "above_optimal": sum(r["gls"] > r["optimal"] + Z_MAX * se(r) for r in rows),
            "bound_above_optimal": sum(r["lml_bound"] > r["optimal"] + 1e-9 for r in rows)}


def summarize(rows: list[dict]) -> list[dict]:
    """Mean acceptance of every method per (source, K)."""
    out = []
    for name in dict.fromkeys(r["source"] for r in rows):
        for K in sorted({r["K"] for r in rows}):
            b = [r for r in rows if r["source"] == name and r["K"] == K]
            out.append({"source": name, "K": K, "pairs": len(b), **{m: float(np.mean([r[m] for r in b]))
                                                                     for m in METHODS}})
    return out


def run(out: str = "lab_out", seed: int = 0, quick: bool = False, n_pairs: int | None = None, real: bool = True,
        show_progress: bool = True, K_max: int = 20, V: int = 10) -> dict:
    """Write ``list.{csv,md,png}`` and ``list_pairs.csv/md``; return headline numbers and check counts."""
    out = out_dir(out)
    n_pairs = n_pairs or (20 if quick else 100)
    if n_pairs < 1 or not 1 <= K_max <= 64:
        raise ValueError("--pairs must be >= 1 and K_max in [1, 64]")
    n_sim = 1000 if quick else 4000
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    p, q = random_pairs(n_pairs, V, rng, mix=False)  # independent Dirichlet(1) pairs, as in a toy study
    rows = measure(f"random V={V}", p, q, K_max, n_sim, gen, show_progress)
    if real:
        for fam in load_real_pairs(*((2, 8) if quick else (6, 16)), seed=seed, show_progress=show_progress)[:2]:
            pr, qr = lump_top(*fam.probs(), 255)  # top-255 tokens + "rest": GLS simulation at V = 49152 is too slow
            rows += measure(fam.name + " (top-255)", pr, qr, K_max, n_sim // 4, gen, show_progress)
    summary = summarize(rows)
    write_table(rows, out, "list_pairs", "Acceptance per pair and K")
    write_table(summary, out, "list", "Mean acceptance against K (GLS simulated, others exact)")
    sources = list(dict.fromkeys(r["source"] for r in summary))
    fig, axes = new_figure(len(sources), width=4.6)
    style = {"gls": ("tab:blue", "-", "GLS (sim)"), "lml_bound": ("tab:blue", ":", "list-matching bound"),
             "specinfer": ("tab:green", "-", "SpecInfer"), "spectr": ("tab:orange", "-", "SpecTr K-SEQ"),
             "optimal": ("k", "--", "optimal (LP)")}
    for ax, name in zip(axes, sources):
        s = [r for r in summary if r["source"] == name]
        for m, (c, ls, lab) in style.items():
            ax.plot([r["K"] for r in s], [r[m] for r in s], color=c, ls=ls, marker="." if m == "gls" else None,
                    label=lab)
        ax.set(xlabel="K drafts", ylabel="acceptance", title=name, xticks=[1, 5, 10, 15, 20])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    png = save_figure(fig, out, "list")
    return {"png": str(png), "violations": violations(rows), "summary": summary}
