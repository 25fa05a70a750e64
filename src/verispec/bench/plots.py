"""PNG plots of an aggregated table (report.aggregate), drawn with matplotlib's Agg backend.

* speedup_by_category.png  speedup over plain decoding on the same backend, per category;
* mal_by_verifier.png      mean acceptance length (block efficiency) per verispec configuration;
* acceptance_by_position.png  P(draft position d accepted | reached);
* achieved_vs_optimal.png  first-position acceptance achieved by each rule against the optimal
                           k-draft acceptance for the same drafts and distributions, against k.
Each function returns the path written, or None when the table has nothing to plot.
"""
from __future__ import annotations

from pathlib import Path

from .configs import parse_name
from .report import ALL

SINGLE = {"specinfer": "token", "spectr": "token", "gls": "gumbel", "gls-strong": "gumbel"}  # their k = 1 case


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _short(cfg: str) -> str:
    f = parse_name(cfg)
    if f["system"] != "verispec":
        return cfg
    return f"{f['verifier']} {f['drafter']} k{f['k']} g{f['gamma'] or 'auto'}" + ("" if f["family"] == "llamacpp" else " (torch)")


def speedup_by_category(table: dict, out: Path) -> Path | None:
    cfgs = [c for c in table if table[c][ALL].get("speedup") is not None and not c.startswith("plain@")]
    if not cfgs:
        return None
    plt = _plt()
    cats = sorted({k for c in cfgs for k in table[c] if k != ALL}) + [ALL]
    fig, ax = plt.subplots(figsize=(max(8, len(cats) * 0.9), 4.5))
    w = 0.8 / len(cfgs)
    for i, c in enumerate(cfgs):
        ys = [table[c].get(k, {}).get("speedup") or 0.0 for k in cats]
        ax.bar([j + i * w - 0.4 + w / 2 for j in range(len(cats))], ys, w, label=_short(c))
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(cats)), cats, rotation=30, ha="right")
    ax.set_ylabel("speedup over plain decoding (same backend)")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, out / "speedup_by_category.png")


def mal_by_verifier(table: dict, out: Path) -> Path | None:
    cfgs = [c for c in table if table[c][ALL].get("mal") is not None]
    if not cfgs:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, len(cfgs) * 0.55), 4.5))
    ys = [table[c][ALL]["mal"] for c in cfgs]
    rules = list(dict.fromkeys(parse_name(c).get("verifier", c) for c in cfgs))  # one colour per rule
    bars = ax.bar(range(len(cfgs)), ys, color=[f"C{rules.index(parse_name(c).get('verifier', c)) % 10}" for c in cfgs])
    for b, y in zip(bars, ys):
        ax.text(b.get_x() + b.get_width() / 2, y, f"{y:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(cfgs)), [_short(c) for c in cfgs], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("mean acceptance length (tokens / target pass)")
    return _save(fig, out / "mal_by_verifier.png")


def acceptance_by_position(table: dict, out: Path) -> Path | None:
    cfgs = [c for c in table if table[c][ALL].get("per_position")]
    if not cfgs:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c in cfgs:
        pp = table[c][ALL]["per_position"]
        ax.plot(range(1, len(pp) + 1), pp, marker="o", ms=3, label=_short(c))
    ax.set_xlabel("draft position d")
    ax.set_ylabel("P(position d accepted | reached)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, out / "acceptance_by_position.png")


def achieved_vs_optimal(table: dict, out: Path) -> Path | None:
    """One line per (rule, drafter, gamma): achieved root acceptance vs k; the optimal dashed."""
    series: dict = {}
    for c in table:
        root = table[c][ALL].get("root")
        if not root or not root["calls"]:
            continue
        f = parse_name(c)
        key = (f["verifier"], f["drafter"], f["gamma"], f["family"])
        series.setdefault(key, []).append((f["k"], root["achieved"], root["optimal"]))
    if not series:
        return None
    for (rule, *rest), pts in series.items():  # start each multi-draft line at its k = 1 special case
        one = SINGLE.get(rule)
        if one and (one, *rest) in series and all(k != 1 for k, *_ in pts):
            pts += [p for p in series[(one, *rest)] if p[0] == 1]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (key, pts) in enumerate(sorted(series.items(), key=lambda kv: str(kv[0]))):
        pts.sort()
        ks = [p[0] for p in pts]
        label = f"{key[0]} {key[1]} g{key[2] or 'auto'}"
        ax.plot(ks, [p[1] for p in pts], marker="o", color=f"C{i % 10}", label=f"{label}: achieved")
        ax.plot(ks, [p[2] for p in pts], ls="--", marker="x", color=f"C{i % 10}", alpha=0.6,
                label=f"{label}: optimal")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (drafts)")
    ax.set_ylabel("first-position acceptance")
    ax.legend(fontsize=6, ncol=2)
    return _save(fig, out / "achieved_vs_optimal.png")


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def all_plots(table: dict, out: str | Path) -> list[Path]:
    """Every plot that has data, written into folder `out` (none, with a warning, without matplotlib)."""
    out = Path(out)
    try:
        _plt()
    except ImportError:
        import warnings

        warnings.warn("matplotlib is not installed: no plots (pip install matplotlib)", stacklevel=2)
        return []
    return [p for p in (speedup_by_category(table, out), mal_by_verifier(table, out),
                        acceptance_by_position(table, out), achieved_vs_optimal(table, out)) if p is not None]
