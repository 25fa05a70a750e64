"""Where the lab's (p target, q draft) pairs come from: random Dirichlet pairs, and real next-token pairs.

Random pairs (:func:`random_pairs`): p ~ Dir(alpha), r ~ Dir(alpha), q = (1 - lam) p + lam r with lam ~ U(0, 1),
which spreads TV(p, q) over [0, 1); ``mix=False`` gives independent p, q ~ Dir(alpha) (the toy study of
Rowan et al., arXiv 2506.05632, uses 100 random pairs with V = 10; its sampler is not stated).

Real pairs come from SmolLM2-135M-Instruct.

Positions: the first ``n_prompts`` Spec-Bench dev prompts (chat template), then ``n_positions`` tokens sampled
from the target at temperature 1 (seeded), recording the next-token logits at every position. Pairs:

* ``T=1 vs T=0.7`` / ``T=1 vs T=1.5``: target p = softmax(l), draft q = softmax(l / T_draft) (same model);
* ``target vs Q4_0``: the embedded model against its Q4_0 re-quantization at T = 1 (the draft
  model of docs/benchmarks.md, built on first use by ``bench.drafts``; it replays the same tokens).

Logits are kept as float32 ``[N, V]``; probabilities are made on demand by :meth:`RealPairs.probs`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..bench.datasets import DEV as PROMPTS  # the Spec-Bench dev split
from .report import progress


@dataclass
class RealPairs:
    """One family of real pairs: p = softmax(logits_p / t_p), q = softmax(logits_q / t_q); both [N, V]."""

    name: str
    logits_p: Tensor  # [N, V] float32
    logits_q: Tensor  # [N, V] float32
    t_p: float = 1.0
    t_q: float = 1.0

    def __len__(self) -> int:
        return self.logits_p.shape[0]

    def probs(self, rows: slice | Tensor = slice(None)) -> tuple[Tensor, Tensor]:
        """(p, q) for ``rows``, float64 [n, V] each."""
        p = torch.softmax(self.logits_p[rows].double() / self.t_p, -1)
        q = torch.softmax(self.logits_q[rows].double() / self.t_q, -1)
        return p, q


def random_pairs(n_pairs: int, V: int, rng, alpha: float = 1.0, mix: bool = True) -> tuple[Tensor, Tensor]:
    """``n_pairs`` random (p, q) pairs over V tokens (see module doc). rng: numpy Generator. Returns 2 x [n, V]."""
    if n_pairs < 1 or V < 2:
        raise ValueError(f"need n_pairs >= 1 and V >= 2, got {n_pairs}, {V}")
    p = rng.dirichlet(np.full(V, alpha), size=n_pairs)  # [n, V]
    r = rng.dirichlet(np.full(V, alpha), size=n_pairs)
    q = (1 - (lam := rng.uniform(size=(n_pairs, 1)))) * p + lam * r if mix else r
    return torch.from_numpy(p), torch.from_numpy(q / q.sum(-1, keepdims=True))


def _prompts(n: int, path: Path = PROMPTS) -> list[str]:
    if not path.exists():
        raise FileNotFoundError(f"prompt file {path} not found (needed for --real; use --no-real)")
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r["turns"][0] for r in rows[:n]]


def _walk(backend, ids: list[int], n_positions: int, gen: torch.Generator | None,
          tokens: list[int] | None = None) -> tuple[list[Tensor], list[int]]:
    """Score ``n_positions`` next-token rows after ``ids``; sample tokens (gen) or replay ``tokens``."""
    backend.reset(ids)
    rows, out = [], []
    for i in range(n_positions):
        logits = backend.score()[0].float()  # [V]
        rows.append(logits)
        tok = tokens[i] if tokens is not None else int(torch.multinomial(torch.softmax(logits.double(), -1), 1,
                                                                       generator=gen))
        out.append(tok)
        backend.commit([], tok)
    return rows, out


def load_real_pairs(n_prompts: int = 12, n_positions: int = 16, seed: int = 0, show_progress: bool = True,
                    draft_temps: tuple[float, ...] = (0.7, 1.5), with_q4_0: bool = True) -> list[RealPairs]:
    """Collect next-token logits of SmolLM2-135M-Instruct (llama.cpp, 1 thread) and build the pair families."""
    if n_prompts < 1 or n_positions < 1:
        raise ValueError("n_prompts and n_positions must be >= 1")
    from ..backends import default_model_path, load_backend

    torch.set_num_threads(1)
    target = load_backend("llamacpp", default_model_path(), n_ctx=1024, n_threads=1)
    gen = torch.Generator().manual_seed(seed)
    prompt_ids = [target.tokenizer.apply_chat_template([{"role": "user", "content": t}]) for t in _prompts(n_prompts)]
    rows, walks = [], []
    for ids in progress(prompt_ids, "target logits", enabled=show_progress):
        r, toks = _walk(target, ids[-900:], n_positions, gen)
        rows += r
        walks.append((ids[-900:], toks))
    logits = torch.stack(rows)  # [N, V]
    pairs = [RealPairs(f"T=1 vs T={t}", logits, logits, 1.0, t) for t in draft_temps]
    if with_q4_0:
        from ..backends import default_model_path
        from ..backends.derived import resolve_draft_model

        draft = load_backend("llamacpp", resolve_draft_model("q4_0", default_model_path()), n_ctx=1024,
                             n_threads=1)
        drows = []
        for ids, toks in progress(walks, "draft logits", enabled=show_progress):
            drows += _walk(draft, ids, n_positions, None, toks)[0]
        pairs.append(RealPairs("target vs Q4_0", logits, torch.stack(drows)))
    return pairs


def lump_top(p: Tensor, q: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """Coarsen pairs to the ``m`` tokens with largest ``p + q`` plus one "rest" bucket holding the other mass.

    Used only where a simulation over the full vocabulary would be too slow; exact formulas are then also
    evaluated on the same coarsened pair so that simulation and formula compare like with like.
    p, q: [N, V]. Returns (p', q'), each [N, m + 1].
    """
    if m < 1:
        raise ValueError("m must be >= 1")
    m = min(m, p.shape[-1])
    idx = (p + q).topk(m, dim=-1).indices  # [N, m]
    pt, qt = p.gather(-1, idx), q.gather(-1, idx)
    rest_p = (1.0 - pt.sum(-1, keepdim=True)).clamp_min(0.0)
    rest_q = (1.0 - qt.sum(-1, keepdim=True)).clamp_min(0.0)
    return torch.cat([pt, rest_p], -1), torch.cat([qt, rest_q], -1)
