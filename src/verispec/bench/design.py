"""The order configurations run in, prompt by prompt, in an interleaved benchmark (`runner.py`, `speed.py`,
`scripts/head_confidence.py`). Torch-free, so that importing a benchmark's entry point stays cheap."""
from __future__ import annotations


def run_order(names: list, i: int) -> list:
    """The order of `names` for the i-th prompt: row i (cyclically) of a Williams design (Williams 1949, balanced
    for first-order carry-over). Rows are rotations of the offsets 0, 1, -1, 2, -2, ... (mod n), and for odd n
    their mirror images too, so over n rows (2n for odd n) every configuration runs once in each place per n rows
    and directly follows every other one equally often. A plain rotation keeps the cyclic order: with plain
    decoding, `generate` and verispec, verispec always ran right after `generate` (docs/speed.md §22)."""
    n = len(names)
    if n < 2:
        return list(names)
    offsets = [0] + [(k + 1) // 2 if k % 2 else -(k // 2) for k in range(1, n)]
    rows = [[(r + o) % n for o in offsets] for r in range(n)]
    if n % 2:
        rows += [row[::-1] for row in rows]
    return [names[j] for j in rows[i % len(rows)]]
