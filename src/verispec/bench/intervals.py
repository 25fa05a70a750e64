"""How far a speedup measured on a few prompts can be trusted: a paired bootstrap over the prompts.

A category of Spec-Bench holds 3 prompts in a quick run, and on a 2-core VM one prompt's time moves by a few
percent from run to run, so "0.94x in writing" may or may not be below 0.97x. The speedup of configuration A over
B on a set of prompts is (sum of A's tokens / sum of A's seconds) / (the same for B); resampling the prompts with
replacement, each draw taking A's and B's figures of the same prompts (paired: a long prompt is slow for both),
gives the spread of that ratio over other draws of prompts like these. It says nothing of a machine's drift
between runs, which interleaving the configurations (bench/runner.py, bench/speed.py) is there for.

Above temperature 0 each configuration draws its own texts, and their lengths move tokens/s (a short answer is
mostly prefill): `matched_lengths` times every run at the mean length of its prompt and seed's runs, from its own
time to the first token and its own step rate, so that a ratio measures speed rather than the draw of lengths.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

__all__ = ["format_interval", "matched_lengths", "rate", "speedup_interval"]


def speedup_interval(a: dict, b: dict, level: float = 0.9, draws: int = 2000,
                     seed: int = 0) -> tuple[float, float] | None:
    """(low, high): the central `level` interval of A's speedup over B, resampling the prompts both ran.

    a, b: {prompt id: (tokens, seconds)}. None when fewer than 2 prompts are shared or a draw has no time.
    """
    if not 0 < level < 1 or draws < 1:
        raise ValueError(f"need 0 < level < 1 and draws >= 1, got {level}, {draws}")
    ids = sorted(set(a) & set(b), key=str)
    if len(ids) < 2:
        return None
    x = np.array([[a[i][0], a[i][1], b[i][0], b[i][1]] for i in ids], dtype=np.float64)  # [P, 4]
    pick = np.random.default_rng(seed).integers(0, len(ids), size=(draws, len(ids)))  # [draws, P]
    tok_a, sec_a, tok_b, sec_b = (x[:, j][pick].sum(1) for j in range(4))  # each [draws]
    if (sec_a <= 0).any() or (sec_b <= 0).any() or (tok_b <= 0).any():
        return None
    ratio = (tok_a / sec_a) / (tok_b / sec_b)
    lo, hi = np.quantile(ratio, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def format_interval(ci: tuple[float, float] | None) -> str:
    """" (low-high)" to follow a speedup in a table; "" for no interval."""
    return f" ({ci[0]:.2f}-{ci[1]:.2f})" if ci else ""


def matched_lengths(runs: list[dict]) -> dict:
    """category -> config -> {prompt: (tokens, seconds)} at matched lengths: every run of a prompt and seed timed
    as if it had written the mean number of tokens of that prompt and seed's runs, n, from its own figures (the
    time to its first token, then n - 1 steps at its own rate after it). Above temperature 0 each configuration
    draws its own text from the same law, and a 20-token answer against a 128-token one is mostly prefill against
    mostly decoding: the raw ratio of one prompt measures the draw as much as the speed. A run of one token or
    none takes its configuration's rate over all runs."""
    groups: dict = defaultdict(list)
    for r in runs:
        groups[r["prompt"], r.get("seed", 0)].append(r)
    pooled: dict = defaultdict(lambda: [0, 0.0])  # config -> [steps, seconds] after the first token
    for r in runs:
        if r["tokens"] > 1:
            pooled[r["config"]][0] += r["tokens"] - 1
            pooled[r["config"]][1] += r["seconds"] - r["first"]
    out: dict = defaultdict(lambda: defaultdict(dict))
    for (prompt, _), group in groups.items():
        n = sum(r["tokens"] for r in group) / len(group)
        for r in group:
            steps, sec = (r["tokens"] - 1, r["seconds"] - r["first"]) if r["tokens"] > 1 else pooled[r["config"]]
            est = r["first"] + max(n - 1, 0) * (sec / steps if steps else 0.0)
            for cat in (r["category"], "ALL"):
                m, t = out[cat][r["config"]].get(prompt, (0.0, 0.0))
                out[cat][r["config"]][prompt] = (m + n, t + est)
    return out


def rate(per_prompt: dict) -> float:
    """Tokens / seconds over {prompt: (tokens, seconds)}."""
    sec = sum(t for _, t in per_prompt.values())
    return sum(n for n, _ in per_prompt.values()) / sec if sec else 0.0
