"""An independent small draft model on any Backend (Leviathan et al. 2023; Chen et al. 2023).

The classic speculative sampling drafter: a cheaper model with the target's tokenizer proposes
tokens sampled from its own next-token law q, after the SAME sampling transform as the target's
p (`probs_from_logits(logits, req.params)`): the q it reports is exactly the law it drew from.
The draws follow the production noise discipline of `kinds.ChildSampler`. Kind 'onehot' is
deterministic (top-k first tokens, then greedy): at temperature 0 it ranks by the untempered
softmax, so a greedy target still gets k distinct first tokens; its q is that ranking law.

Chains (k = 1): gamma steps of `score()` (logits after the backend's pending token) and
`commit([], x)` (x becomes pending, the scored token's KV is kept), so the draft model's cache
holds the drafted tokens. `observe` then rolls it back to context + accepted with the verifier's
next token pending: `truncate` when a draft token was rejected, a plain `commit([], next)` when
all were accepted (the last draft token is pending, not yet in the cache).

Trees (k > 1): grown depth by depth; at depth t the whole tree of depth < t is re-scored with
`score(tokens, parent)` and each draft's child drawn from its prefix's row. Simple rather than
fast: a tree of k drafts of length gamma costs ~k gamma^2 / 2 token evaluations instead of
k gamma, and the committed state never moves (score leaves it alone), so the backend stays at
the context; `observe` commits the accepted tokens as one chain.

The drafter keeps its own copy of the tokens its backend holds; every `propose` / `observe`
syncs to the context it is given (truncate to the common prefix, then the missing tokens as
one chained pass; a full reset on the first call or after a long divergence), so plain target
steps the drafter never saw, or a restarted engine, cost nothing in correctness.
"""
from __future__ import annotations

import time

import torch

from ..backends.base import Backend
from ..checks import int_at_least
from ..sampling import SamplingParams, probs_from_logits
from ..tree import DraftTree, VerifyResult
from .base import Drafter, DraftRequest, accepted_context, common_prefix
from .compat import check_vocab
from .kinds import ChildSampler

_CHUNK = 64  # tokens per catch-up pass when syncing to a longer context
_MAX_CATCHUP = 256  # beyond this many missing tokens a full reset (batched prefill) is cheaper


class ModelDrafter(Drafter):
    """Drafts with a small model behind `backend` (llama.cpp or torch).

    Args:
        backend: the draft model, used by this drafter alone.
        target: if given, `check_compatible(target)` runs at construction.
        window: if set, the draft model sees only the last `window` to `2 * window` tokens of the
            context (re-anchored every `window` tokens). Its prefill and catch-up then cost at most
            `window` tokens: on a 1500-token RAG prompt a full Q4_0 prefill costs more than the
            drafts save. Any q is lossless; a shorter context only lowers acceptance.
    """

    kinds = ("iid", "wor", "onehot", "gumbel")

    def __init__(self, backend: Backend, target: Backend | None = None, window: int | None = None):
        if not isinstance(backend, Backend):
            raise ValueError(f"ModelDrafter needs a verispec Backend, got {type(backend).__name__}")
        if window is not None and not int_at_least(window, 1):
            raise ValueError(f"window must be a positive int or None, got {window!r}")
        self.backend, self.window = backend, window
        self._start = 0  # context position of the draft model's first token (window anchor)
        self.catchup_s = 0.0  # seconds the last propose spent catching up on tokens decoded without it
        self._tokens: list[int] = []  # what the backend holds: committed tokens, last = its pending
        if target is not None:
            self.check_compatible(target)

    @property
    def vocab_size(self) -> int:
        return self.backend.vocab_size

    def check_compatible(self, target: Backend) -> None:
        """ValueError unless the draft model and `target` share the vocabulary (compat.check_vocab)."""
        check_vocab(self.backend, target)

    def reset(self) -> None:
        self._tokens, self._start = [], 0

    def prepare(self, tokens: list[int]) -> None:
        """Nothing: the draft model prefills (batched) when it first drafts, reported as `catchup_s`. Where the
        controller finds its drafts too dear it drafts rarely or never, and a prefill at every request was lost:
        ~67 ms, ~4% of a short request, for a Q4_0 copy of the embedded model on 2 cores (docs/speed.md §33)."""

    def _view(self, tokens: list[int]) -> list[int]:
        """The part of the context the draft model holds: all of it, or the window's tail."""
        if self.window is None:
            return list(tokens)
        if len(tokens) - self._start > 2 * self.window or len(tokens) <= self._start:
            self._start = max(0, len(tokens) - self.window)
        return list(tokens[self._start:])

    # ------------------------------------------------------------------ contract
    def propose(self, req: DraftRequest, budget: int) -> DraftTree | None:
        self.check_request(req, budget)
        view = self._view(req.tokens)
        gamma = min(budget, self.backend.n_ctx - len(view) - 1)  # room for the drafts + next token
        if gamma < 1:
            return None
        t0 = time.perf_counter()
        self._sync(view)
        self.catchup_s = time.perf_counter() - t0
        draw = ChildSampler(req.noise, req.kind, gamma)
        # onehot drafts are point masses whatever law ranks them: at temperature 0 rank by the
        # untempered softmax, so that k > 1 gives the top-k first tokens, not one argmax
        params = SamplingParams() if req.kind == "onehot" and req.params.greedy else req.params
        if req.k == 1 and req.kind == "onehot" and req.params.greedy:  # a greedy target checks the argmax only
            return DraftTree.from_drafts(self._greedy_chain(gamma)[None], None, "onehot")
        if req.k == 1:
            drafts, qs = self._chain(params, gamma, draw)
        else:
            drafts, qs = self._tree(params, req.k, gamma, draw)
        keep = drafts[:, 0] >= 0  # wor / onehot: drop drafts q's support could not fill
        return DraftTree.from_drafts(drafts[keep][None], qs[keep][None], req.kind)

    def observe(self, req: DraftRequest, tree: DraftTree, result: VerifyResult) -> None:
        context = self._view(accepted_context(req, tree, result))
        if len(context) > self.backend.n_ctx:
            self._tokens = []  # nothing more to draft; the next propose returns None
            return
        self._sync(context)

    # ------------------------------------------------------------------ drafting
    def _chain(self, params: SamplingParams, gamma: int, draw: ChildSampler) -> tuple[torch.Tensor, torch.Tensor]:
        """One draft of gamma tokens, committed into the draft model as they are drawn.

        Returns drafts [1, gamma] and q [1, gamma, V].
        """
        be = self.backend
        drafts = torch.full((1, gamma), -1, dtype=torch.int64)
        qs = torch.zeros(1, gamma, be.vocab_size, dtype=torch.float64)
        for t in range(gamma):
            q = probs_from_logits(be.score(), params)  # [1, V] after the pending token
            x = draw(q, 0, t)
            drafts[0, t], qs[0, t] = x, q[0]
            be.commit([], x)
            self._tokens.append(x)
        return drafts, qs

    def _greedy_chain(self, gamma: int) -> torch.Tensor:
        """One onehot draft of gamma tokens, each the draft model's argmax (the first maximum, as
        `kinds.ChildSampler` takes it), without building q. Returns drafts [1, gamma]."""
        be, drafts = self.backend, []
        for _ in range(gamma):
            x = int(be.score()[0].argmax())
            drafts.append(x)
            be.commit([], x)
            self._tokens.append(x)
        return torch.tensor([drafts], dtype=torch.int64)

    def _tree(self, params: SamplingParams, k: int, gamma: int,
              draw: ChildSampler) -> tuple[torch.Tensor, torch.Tensor]:
        """k drafts grown depth by depth, the tree re-scored at every depth (committed state untouched).

        Returns drafts [k, gamma] (-1 rows for drafts that could not start) and q [k, gamma, V].
        """
        be = self.backend
        drafts = torch.full((k, gamma), -1, dtype=torch.int64)
        qs = torch.zeros(k, gamma, be.vocab_size, dtype=torch.float64)
        for t in range(gamma):
            live = (drafts[:, 0] >= 0).nonzero()[:, 0] if t > 0 else torch.arange(k)  # [k']
            if live.numel() == 0:
                break
            if t == 0:
                logits, row = be.score(), torch.zeros(k, dtype=torch.int64)  # [1, V], [k]
            else:
                tree = DraftTree.from_drafts(drafts[live, :t][None])
                logits = be.score(tree.tokens[0], tree.parent[0])  # [N + 1, V]
                row = tree.paths[0, :, t - 1] + 1  # [k'] row of each live draft's prefix
            probs = probs_from_logits(logits[row], params)  # [k', V] law after each live draft's prefix
            for i, j in enumerate(live.tolist()):
                q = probs[i: i + 1]  # [1, V]
                drafts[j, t], qs[j, t] = draw(q, j, t), q[0]
        return drafts, qs

    # ------------------------------------------------------------------ cache sync
    def _sync(self, tokens: list[int]) -> None:
        """Make the backend hold `tokens` (last one pending), reusing the longest cached prefix."""
        be, cached = self.backend, self._tokens
        in_step = bool(cached) and be.n_past == len(cached) and be.pending == cached[-1]
        if in_step and tokens == cached:
            return
        keep = min(common_prefix(cached, tokens), len(cached) - 1, len(tokens) - 1) if in_step else 0
        if keep < 1 or len(tokens) - keep > _MAX_CATCHUP:
            be.reset(tokens)
        else:
            if (keep, tokens[keep]) != (be.n_past - 1, be.pending):
                be.truncate(keep, tokens[keep])  # cache: tokens[:keep], pending tokens[keep]
            rest = tokens[keep + 1:]
            while rest:  # evaluate the old pending + chunk[:-1] in one pass, chunk[-1] pending
                chunk, rest = rest[:_CHUNK], rest[_CHUNK:]
                chain = chunk[:-1]
                if chain:
                    be.score(torch.tensor(chain), torch.arange(-1, len(chain) - 1))
                be.commit(list(range(len(chain))), chunk[-1])
        self._tokens = list(tokens)

