"""DraftTree and VerifyResult: the data that flows from drafter to verifier to engine.

A draft of k sequences of length <= gamma is stored twice over:

* as a merged **tree** (`tokens`, `parent`) for the target's single forward pass: drafts
  that share a prefix share nodes;
* as **paths** `[B, k, gamma]` of node indices, so that a verifier still sees every draft
  as its own trial (duplicates stay separate trials, ALGORITHMS.md §4) in draw order.

Distributions are indexed by *rows*: row 0 is the root (the context), row i + 1 is node i.
`p[:, r]` is the target's next-token law after row r, `q[:, r]` the law the children of
row r were drawn from.

Draft kinds (how children were drawn), which decide the rules that may verify them:

* ``iid``     k i.i.d. samples from q at every node (with replacement);
* ``wor``     children of a node drawn from q sequentially without replacement;
* ``onehot``  deterministic children (greedy, n-gram, top-k): each a point-mass proposal;
* ``gumbel``  drawn by the exponential race on the shared position-keyed noise, row j for
  draft j (only the Gumbel rules may verify these).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

DRAFT_KINDS = ("iid", "wor", "onehot", "gumbel")


@dataclass
class DraftTree:
    tokens: torch.Tensor  # [B, N] int64 node tokens, -1 for padding
    parent: torch.Tensor  # [B, N] int64 parent node, -1 = child of the root; parent[i] < i
    paths: torch.Tensor  # [B, k, gamma] int64 node of draft j at depth t, -1 past its end
    q: torch.Tensor | None  # [B, N + 1, V] law the children of each row were drawn from
    kind: str = "iid"

    @property
    def batch(self) -> int:
        return self.tokens.shape[0]

    @property
    def num_nodes(self) -> int:
        return self.tokens.shape[1]

    @property
    def k(self) -> int:
        return self.paths.shape[1]

    @property
    def gamma(self) -> int:
        return self.paths.shape[2]

    @staticmethod
    def from_drafts(drafts: torch.Tensor, q: torch.Tensor | None = None, kind: str = "iid") -> "DraftTree":
        """Merge k drafts into a tree.

        drafts: [B, k, gamma] int64 tokens, -1 past the end of a shorter draft
        q:      [B, k, gamma, V] law draft j's token t was drawn from (None for onehot),
                equal for drafts that share the prefix (it is a function of the prefix)
        """
        if drafts.dim() != 3:
            raise ValueError(f"drafts must be [B, k, gamma], got shape {tuple(drafts.shape)}")
        if kind not in DRAFT_KINDS:
            raise ValueError(f"kind must be one of {DRAFT_KINDS}, got {kind!r}")
        B, k, gamma = drafts.shape
        if gamma == 0 or k == 0:
            raise ValueError("drafts is empty: need k >= 1 drafts of length >= 1")
        drafts = drafts.long().cpu().contiguous()
        if B == 1 and q is None:  # one request's point masses (every greedy / lookup draft): a Python trie
            return DraftTree._merge_one(drafts[0].tolist(), kind)
        valid = drafts >= 0
        if (valid[:, :, 1:] & ~valid[:, :, :-1]).any():
            raise ValueError("drafts: a -1 (end) is followed by a token")
        # same[b, j, i, t]: drafts j and i agree on tokens 0..t (both present)
        eq = (drafts[:, :, None, :] == drafts[:, None, :, :]) & valid[:, :, None, :] & valid[:, None, :, :]
        same = torch.cumprod(eq.to(torch.int8), -1).bool()
        rep = same.to(torch.int8).argmax(2)  # [B, k, gamma] first draft sharing the prefix
        is_new = valid & (rep == torch.arange(k)[None, :, None])
        order = is_new.transpose(1, 2).reshape(B, gamma * k)  # nodes numbered depth-major
        number = (order.cumsum(1) - 1).view(B, gamma, k).transpose(1, 2)  # [B, k, gamma]
        paths = torch.where(valid, number.gather(1, rep), -1)
        N = int(is_new.sum((1, 2)).max())
        tokens = torch.full((B, N + 1), -1, dtype=torch.int64)
        parent = torch.full((B, N + 1), -1, dtype=torch.int64)
        prev = torch.cat([torch.full_like(paths[:, :, :1], -1), paths[:, :, :-1]], -1)
        slot = torch.where(is_new, number, N)  # non-new entries write to a scratch column
        tokens.scatter_(1, slot.view(B, -1), torch.where(is_new, drafts, -1).view(B, -1))
        parent.scatter_(1, slot.view(B, -1), torch.where(is_new, prev, -1).view(B, -1))
        tokens, parent = tokens[:, :N], parent[:, :N]
        tree = DraftTree(tokens, parent, paths, None, kind)
        if q is not None:
            if q.shape[:3] != drafts.shape:
                raise ValueError(f"q must be [B, k, gamma, V] matching drafts {tuple(drafts.shape)}, got {tuple(q.shape)}")
            tree.q = torch.zeros(B, N + 1, q.shape[-1], dtype=q.dtype)
            bi, ji, ti = valid.nonzero(as_tuple=True)
            tree.q[bi, tree.row_of_prefix()[bi, ji, ti]] = q[bi, ji, ti]
        return tree

    @staticmethod
    def _merge_one(drafts: list[list[int]], kind: str) -> "DraftTree":
        """`from_drafts` of one request's k drafts without laws, as lists [k][gamma]: the same tree, nodes numbered
        depth-major as there (a node is its parent's node and its token), in ~20 us where the tensor ops take
        ~0.15-0.3 ms (docs/speed.md §17)."""
        k, gamma = len(drafts), len(drafts[0])
        node_of: dict[tuple[int, int], int] = {}  # (parent node, token) -> node
        tokens: list[int] = []
        parent: list[int] = []
        paths = [[-1] * gamma for _ in range(k)]
        for t in range(gamma):
            for j in range(k):
                x = drafts[j][t]
                if x < 0:
                    continue
                up = paths[j][t - 1] if t else -1
                if t and up < 0:
                    raise ValueError("drafts: a -1 (end) is followed by a token")
                n = node_of.get((up, x))
                if n is None:
                    n = node_of[(up, x)] = len(tokens)
                    tokens.append(x)
                    parent.append(up)
                paths[j][t] = n
        return DraftTree(torch.tensor([tokens], dtype=torch.int64).view(1, -1),
                         torch.tensor([parent], dtype=torch.int64).view(1, -1),
                         torch.tensor([paths], dtype=torch.int64), None, kind)

    @staticmethod
    def chain(tokens: torch.Tensor, q: torch.Tensor | None = None, kind: str = "iid") -> "DraftTree":
        """A single draft: tokens [B, gamma], q [B, gamma, V] (None for onehot)."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be [B, gamma], got shape {tuple(tokens.shape)}")
        return DraftTree.from_drafts(tokens.unsqueeze(1), None if q is None else q.unsqueeze(1), kind)

    def drafts(self) -> torch.Tensor:
        """[B, k, gamma] the drafts' tokens (-1 past a draft's end): what `from_drafts` merged."""
        tok = self.tokens.gather(1, self.paths.clamp(min=0).flatten(1)).view_as(self.paths)
        return torch.where(self.paths >= 0, tok, -1)

    def row_of_prefix(self) -> torch.Tensor:
        """[B, k, gamma] row whose children hold draft j's token t (0 = root, else node + 1)."""
        prev = torch.cat([torch.full_like(self.paths[:, :, :1], -1), self.paths[:, :, :-1]], -1)
        return prev + 1

    def depth(self) -> torch.Tensor:
        """[B, N + 1] depth of every row (root 0); -1 for padding nodes."""
        B, N = self.tokens.shape
        d = torch.full((B, N + 1), -1, dtype=torch.int64)
        d[:, 0] = 0
        for i in range(N):
            par = self.parent[:, i] + 1
            d[:, i + 1] = torch.where(self.tokens[:, i] >= 0, d.gather(1, par[:, None])[:, 0] + 1, -1)
        return d


@dataclass
class VerifyResult:
    """Outcome of verifying one draft tree per request.

    Glossary (after vLLM's rejection sampler):
      accepted tokens  - draft tokens the verifier kept, a root-to-node path in the tree;
      recovered token  - drawn from a residual law when a draft token is rejected;
      bonus token      - drawn from p after the last draft token, when nothing is left to test.
    Every iteration emits num_accepted + 1 tokens: the accepted ones and one recovered or bonus.
    """

    path: torch.Tensor  # [B, gamma] accepted node indices in order, -1 padded
    num_accepted: torch.Tensor  # [B] tau, the number of accepted draft tokens
    next_token: torch.Tensor  # [B] the recovered or bonus token
    bonus: torch.Tensor  # [B] bool, True if next_token is a bonus token

    def output(self, tree: DraftTree) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens each request emits this iteration: ([B, gamma + 1] accepted then next, -1 padded; count [B])."""
        toks = torch.where(self.path >= 0, tree.tokens.gather(1, self.path.clamp(min=0)), -1)
        toks = torch.cat([toks, torch.full_like(toks[:, :1], -1)], 1)
        toks.scatter_(1, self.num_accepted[:, None], self.next_token[:, None])
        return toks, self.num_accepted + 1
