"""Shared output helpers of the lab: one table writer (CSV + Markdown), one figure saver, one progress bar.

Every lab command writes ``<out>/<name>.csv``, ``<out>/<name>.md`` and ``<out>/<name>.png`` through these
three functions, so formats stay identical across experiments.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: the lab only writes PNG files
import matplotlib.pyplot as plt


def out_dir(path: str | os.PathLike) -> Path:
    """Create (if needed) and return the output folder; ``ValueError`` if it exists as a file."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"--out {p} exists and is not a directory")
    p.mkdir(parents=True, exist_ok=True)
    return p


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_table(rows: Sequence[dict], out: Path, name: str, title: str = "") -> tuple[Path, Path]:
    """Write ``rows`` (list of dicts with the same keys) to ``out/name.csv`` and ``out/name.md``.

    The CSV keeps full precision; the Markdown table rounds floats to 4 significant digits.
    Returns the two paths.
    """
    if not rows:
        raise ValueError(f"table {name!r} has no rows")
    keys = list(rows[0].keys())
    csv_path, md_path = out / f"{name}.csv", out / f"{name}.md"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    lines = [f"# {title}", ""] if title else []
    lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(r[k]) for k in keys) + " |" for r in rows]
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def new_figure(ncols: int = 1, width: float = 5.5, height: float = 4.2):
    """A matplotlib figure with ``ncols`` axes side by side (Agg backend). Returns ``(fig, axes list)``."""
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    return fig, list(axes[0])


def save_figure(fig, out: Path, name: str) -> Path:
    """Save ``fig`` to ``out/name.png`` (tight layout, 120 dpi), close it, return the path."""
    path = out / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def progress(it: Iterable, desc: str, total: int | None = None, enabled: bool = True) -> Iterable:
    """``tqdm`` progress bar on stderr when ``enabled`` (lab commands longer than a few seconds)."""
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, total=total, leave=False)
