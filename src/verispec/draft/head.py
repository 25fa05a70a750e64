"""Drafting with a trained feature-level head (EAGLE-1, Li et al. 2024, arXiv 2401.15077).

The target (a torch backend recording its features, `TorchBackend.record_features`) keeps the
final hidden state f_i of every committed position (and, for a head with taps, the outputs of those
layers: EAGLE-3's low and middle features; f_{i-1} below then stands for [f_{i-1} | taps]). The
head (`head_model.DraftHead`) holds one key / value row per context position i, computed from
(x_i, f_{i-1}) with real features; a draft of gamma tokens then costs gamma steps of one small
decoder layer and a reduced LM head:

    rows 0..P    <- (x_i, f_{i-1})       real features (P = the pending token's position)
    f̂_P          -> x̂_1 = draw from q_1 = softmax(W f̂_P)            (after the sampling transform)
    (x̂_1, f̂_P)   -> f̂_{P+1} -> x̂_2 ...   chain rows, dropped after the draft

At temperature 0 the draft is a tree instead (`value_tree`, EAGLE-2): each depth is one head step over
the few nodes worth expanding, their rows seeing the context and their own ancestors' rows.

Only the rows of tokens committed since the last draft are computed at the next `propose`
(usually tau + 1), so the target never runs twice. Kind 'onehot' takes argmaxes (a greedy
target), kind 'iid' draws from q with the production noise (`kinds.ChildSampler`) and reports q,
zero outside the head's draft vocabulary: exactly the law drawn from, so any verifier is lossless.
"""
from __future__ import annotations

import os
import time

import torch

from ..backends.torch_llama import cpu_bf16
from ..checks import int_at_least
from ..cli_args import HEAD_QUANTS as QUANTS
from ..sampling import SamplingParams, probs_from_logits
from ..tree import DraftTree
from .base import Drafter, DraftRequest, common_prefix
from .head_model import DraftHead, HeadCache, drafting_copy, load_head
from .kinds import ChildSampler
from .value_tree import TreeShape, as_drafts, grow_tree

DEFAULT_TREE = TreeShape()  # the value tree's shape at temperature 0 (docs/speed.md §7)
_CATCHUP_ROWS = 16  # a sync of more rows than this resumes after plain steps: a one-off, not per draft


def shipped_head_path() -> str:
    """The head trained for the embedded SmolLM2-135M-Instruct (``verispec train-head`` remakes it)."""
    return os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "smollm2-135m-instruct.head.pt")


class HeadDrafter(Drafter):
    """Drafts from a `DraftHead` on the target's own features: at temperature 0 a tree of the nodes the head
    rates most likely to be accepted (`tree`, EAGLE-2), or a chain cut by `confidence` (tree=None), or with
    k > 1 the top-k first tokens each continued by its argmax chain; a sampled target gets one chain.

    Args:
        target: the target backend; it must record features (a `TorchBackend`), switched on here.
        head: a `DraftHead`, a path to a saved one, or None for the shipped head.
        dtype: the head's compute dtype (default: the target's).
        window: the head keeps rows for the context's last `window` to `2 * window` positions (re-anchored
            every `window` tokens), so a long prompt costs it at most `2 * window` rows; None (default) = all.
            One Spec-Bench run with 256 was no faster (docs/speed.md §5), so it is off by default.
        confidence: greedy chains stop where the product of the head's top-1 probabilities falls below this
            (no draft at all if the first does): the head is calibrated (its top-1 probability p is right
            about p of the time, docs/speed.md §6), so drafting on stops paying there, as EAGLE-2
            (arXiv 2406.16858) uses it to shape trees. None = chains of the budget's length. The default 0.15
            is about what a drafted token costs in target steps (head, target row, verification); 0.1 and 0.2
            measured alike.
        tree: at temperature 0 with k = 1, draft the tree `value_tree.grow_tree` shapes from the head's
            probabilities (default `TreeShape()`: up to 10 nodes); None = one chain cut by `confidence`.
        quant: draft with the head's weights quantized (`head_model.drafting_copy`): "int4" (4-bit groups; int8
            rows where torch's 4-bit kernel does not take a shape) or "int8" (int8 rows; ~2x cheaper head calls
            than bfloat16, docs/speed.md §10; int4 ~20% cheaper again, §14), its q moved by rounding, which the
            verifier corrects like any other q; "none": float, packed for the CPU's kernels (`FloatLinear`). None
            (default) = "int4" on a CPU target in float32 / bfloat16 / float16 (torch's kernels take those) where
            the CPU computes bfloat16 natively; "none" elsewhere (without it torch's 4-bit kernel is slow: a
            float32 head step 2.3 ms against 5.2, §24).
    """

    kinds = ("onehot", "iid")

    def __init__(self, target, head: DraftHead | str | None = None, dtype: torch.dtype | None = None,
                 window: int | None = None, confidence: float | None = 0.15,
                 tree: TreeShape | None = DEFAULT_TREE, quant: str | None = None):
        if confidence is not None and not 0 <= confidence < 1:
            raise ValueError(f"confidence must be in [0, 1) or None, got {confidence!r}")
        if window is not None and not int_at_least(window, 1):
            raise ValueError(f"window must be a positive int or None, got {window!r}")
        if tree is not None and not isinstance(tree, TreeShape):
            raise ValueError(f"tree must be a TreeShape or None, got {tree!r}")
        if not hasattr(target, "record_features"):
            raise ValueError(f"the head drafter reads the target's features: it needs the torch backend, "
                             f"got {type(target).__name__} (use --backend torch)")
        meta = {}
        if not isinstance(head, DraftHead):
            path = head or shipped_head_path()
            if not os.path.isfile(path):
                raise ValueError(f"draft head not found: {path} (make one with `verispec train-head`)")
            head, meta = load_head(path)
        model = target.model
        embed, lm_head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
        check_target(meta, lm_head)
        dtype = dtype or getattr(target, "dtype", torch.float32)
        if quant not in (None, *QUANTS):
            raise ValueError(f"quant must be one of {', '.join(QUANTS)} or None, got {quant!r}")
        quant_ok = lm_head.device.type == "cpu" and dtype in (torch.float32, torch.bfloat16, torch.float16)
        if quant in ("int4", "int8") and not quant_ok:
            raise ValueError(f"{quant} drafting needs a CPU target in float32, bfloat16 or float16, got "
                             f"{lm_head.device.type} {dtype}")
        quant = quant or ("int4" if quant_ok and cpu_bf16() else "none")
        bits = {"int4": 4, "int8": 8, "none": 0}[quant]
        self.head = drafting_copy(head.to(dtype), bits).attach(embed, lm_head)
        self.target, self.dtype = target, dtype
        self.cache = HeadCache(self.head, dtype=dtype)
        self._tokens: list[int] = []  # the context whose rows the cache holds (positions start .. start + len - 1)
        self.window, self._start = window, 0
        self.confidence, self.tree = confidence, tree
        self.expected = 0.0  # the last value tree's expected accepted length (the sum of its values)
        self.catchup_s = 0.0
        target.record_features(True, taps=self.head.taps)

    @property
    def vocab_size(self) -> int:
        return self.target.vocab_size

    def reset(self) -> None:
        self._tokens, self.cache.len, self._start = [], 0, 0

    def prepare(self, tokens: list[int]) -> None:
        """The prompt's rows, right after the target's prefill (timed with it)."""
        self._sync(tokens)

    def check_request(self, req: DraftRequest, budget: int) -> None:
        super().check_request(req, budget)
        if req.k != 1 and req.kind != "onehot":
            raise ValueError(f"the head drafter samples one chain (k = 1), not {req.k} drafts; k > 1 takes "
                             "kind 'onehot' (a greedy target)")
        if self.target.n_past != len(req.tokens):
            raise ValueError("the head drafter drafts for the target's own context: the target holds "
                             f"{self.target.n_past} tokens, the request {len(req.tokens)}")

    # ------------------------------------------------------------------ contract
    @torch.inference_mode()
    def propose(self, req: DraftRequest, budget: int) -> DraftTree | None:
        self.check_request(req, budget)
        t0 = time.perf_counter()
        rows = self._sync(req.tokens)
        self.catchup_s = time.perf_counter() - t0 if rows > _CATCHUP_ROWS else 0.0
        f_hat, P = self._last, len(req.tokens) - 1
        if req.k > 1:
            return self._top_k_tree(f_hat, P, req.k, budget)
        if req.any_tree and self.tree is not None:  # (any_tree: a greedy target, kind 'onehot')
            return self._value_tree(f_hat, P, budget)
        greedy = req.kind == "onehot"
        params = SamplingParams() if greedy else req.params
        V, vocab = self.target.vocab_size, self.head.vocab
        draw = None if greedy else ChildSampler(req.noise, req.kind, budget)
        drafts, qs, sure = [], [], 1.0
        for t in range(budget):
            z = self.head.logits(f_hat).float()  # [Vd]
            if greedy:
                if self.confidence is not None:
                    sure *= float(z.softmax(-1).max())  # the head's own estimate that the chain so far holds
                    if sure < self.confidence:
                        break
                x = int(vocab[int(z.argmax())])
            else:
                full = torch.full((1, V), float("-inf"))
                full[0, vocab] = z
                q = probs_from_logits(full, params)  # [1, V], zero outside the draft vocabulary
                x = draw(q, 0, t)
                qs.append(q[0])
            drafts.append(x)
            if t + 1 < budget:  # the chain row of x̂ (position P + 1 + t), dropped after this draft
                f_hat = self.cache.step(torch.tensor([x]), f_hat[None], torch.tensor([P + 1 + t]))[-1]
        self.cache.len = P + 1 - self._start
        if not drafts:
            return None  # not even the first token is likely enough: a plain step
        toks = torch.tensor([drafts])
        return DraftTree.from_drafts(toks[None], None if greedy else torch.stack(qs)[None, None], req.kind)

    def _top_k_tree(self, f_hat: torch.Tensor, P: int, k: int, gamma: int) -> DraftTree:
        """k onehot drafts: the head's top-k first tokens, each continued by its argmax chain. The k chains
        extend in one head step per depth; each chain row sees the context rows and its own chain."""
        vocab, base = self.head.vocab, P + 1 - self._start  # base: the cache row after the pending token's
        drafts = torch.empty(k, gamma, dtype=torch.long)
        drafts[:, 0] = vocab[self.head.logits(f_hat).float().topk(k).indices]
        f = f_hat.expand(k, -1)
        par = [-1] * k  # node j + (t - 1) k is branch j's token at depth t, its row base + that
        for t in range(1, gamma):
            layer = list(range((t - 1) * k, t * k))
            seen = tree_rows_seen(layer, par, {n: base + n for n in range(layer[0])}, base, self.cache.len)
            f = self.cache.step(drafts[:, t - 1], f, torch.full((k,), P + t), seen)
            par += layer  # the next depth's parents
            drafts[:, t] = vocab[self.head.logits(f).float().argmax(-1)]
        self.cache.len = base
        return DraftTree.from_drafts(drafts[None], None, "onehot")

    def _value_tree(self, f_hat: torch.Tensor, P: int, gamma: int) -> DraftTree | None:
        """EAGLE-2's tree of the most valuable nodes (`value_tree.grow_tree`). Each depth is one head step over
        the nodes it expands: a node's row reads (its token, its parent's f̂) and sees the context rows, its
        ancestors' rows and itself."""
        vocab, base = self.head.vocab, P + 1 - self._start  # base: the cache row after the pending token's
        row: dict[int, int] = {}  # node -> its cache row
        feat: dict[int, torch.Tensor] = {}  # node -> f̂ of its row (its children's feature)

        def expand(nodes: list[int], tok: list[int], par: list[int], depth: int) -> torch.Tensor:
            start = self.cache.len
            seen = tree_rows_seen(nodes, par, row, base, start)  # [B, start + B]
            fin = torch.stack([f_hat if par[n] < 0 else feat[par[n]] for n in nodes])  # [B, H]
            f = self.cache.step(vocab[torch.tensor([tok[n] for n in nodes])], fin,
                                torch.full((len(nodes),), P + depth), seen)  # [B, H]
            for j, n in enumerate(nodes):
                row[n], feat[n] = start + j, f[j]
            return self.head.logits(f).float().softmax(-1)  # [B, Vd]

        try:
            paths, self.expected = grow_tree(self.head.logits(f_hat).float().softmax(-1), expand, self.tree, gamma,
                                             self.price)
        finally:
            self.cache.len = base
        if not paths:
            return None  # not even the first token is likely enough: a plain step
        return DraftTree.from_drafts(as_drafts([vocab[torch.tensor(p)].tolist() for p in paths]), None, "onehot")

    # ------------------------------------------------------------------ rows
    def _columns(self, feats: torch.Tensor) -> torch.Tensor:
        """The target's recorded rows [.., H (1 + its taps)] cut to what this head reads (another head on the
        same target may have asked for more taps)."""
        cols = _tap_columns(self.head.fc.out_features, self.target.feature_taps, self.head.taps)
        return feats if cols is None else feats[:, cols]

    def _sync(self, tokens: list[int]) -> int:
        """Make the cache hold the rows of positions start .. len(tokens) - 1 (the last is the pending token's);
        remembers the pending row's prediction f̂_P. Returns the number of rows computed."""
        P = len(tokens) - 1
        if self.window is not None and (P + 1 - self._start > 2 * self.window or P < self._start):
            self._start, self._tokens = max(0, P + 1 - self.window), []  # re-anchor: rows from here on
        s = self._start
        keep = min(max(common_prefix(self._tokens[:s + self.cache.len], tokens), s), P)  # re-run the pending row
        feats = self._columns(self.target.features(max(keep - 1, 0), P))  # f_{keep-1} .. f_{P-1}
        if keep == 0:
            feats = torch.cat((feats.new_zeros(1, feats.shape[1]), feats))  # f_{-1} = 0, as in training
        self.cache.len = keep - s
        out = self.cache.step(torch.tensor(tokens[keep:P + 1]), feats, torch.arange(keep, P + 1), last_only=True)
        self._last = out[-1]
        self._tokens = list(tokens)
        return P + 1 - keep


def _tap_columns(H: int, recorded: tuple[int, ...], wanted: tuple[int, ...]) -> torch.Tensor | None:
    """Columns of a recorded feature row [f | h_r for r in recorded] that make [f | h_t for t in wanted]; None if
    all of them, in order."""
    if recorded == wanted:
        return None
    blocks = [0] + [1 + recorded.index(t) for t in wanted]
    return torch.cat([torch.arange(b * H, (b + 1) * H) for b in blocks])


def tree_rows_seen(nodes: list[int], par: list[int], row: dict[int, int], base: int, start: int) -> torch.Tensor:
    """BoolTensor [B, start + B]: what the new rows start .. start + B - 1 of `nodes` attend to: the context
    rows (0 .. base - 1), the rows of their ancestors (`row`: node -> its row) and their own."""
    seen = torch.zeros(len(nodes), start + len(nodes), dtype=torch.bool)
    seen[:, :base] = True
    for j, n in enumerate(nodes):
        seen[j, start + j] = True
        a = par[n]
        while a >= 0:
            seen[j, row[a]] = True
            a = par[a]
    return seen


def target_probe(model, name: str = "") -> dict:
    """Metadata a head file keeps about its target: a few rows of its LM head (`check_target` compares them)."""
    w = model.get_output_embeddings().weight.detach()
    ids = torch.linspace(0, w.shape[0] - 1, 8).long()
    return {"target": name, "vocab_size": int(w.shape[0]), "probe_ids": ids, "probe": w[ids].float().clone()}


def check_target(meta: dict, lm_head: torch.Tensor) -> None:
    """ValueError unless the head was trained for this target (its LM head rows match the probe saved)."""
    probe = meta.get("probe")
    if probe is None:
        return
    ids = torch.as_tensor(meta["probe_ids"])
    if lm_head.shape[0] != meta.get("vocab_size", lm_head.shape[0]) or int(ids.max()) >= lm_head.shape[0]:
        raise ValueError(f"this draft head was trained for another target ({meta.get('target', 'unknown')}, "
                         f"{meta.get('vocab_size')} tokens); this one has {lm_head.shape[0]}")
    got = lm_head.detach()[ids].float()
    want = torch.as_tensor(probe).float()
    if got.shape != want.shape or float((got - want).norm() / want.norm()) > 0.05:
        raise ValueError(f"this draft head was trained for another target ({meta.get('target', 'unknown')}): "
                         "its LM head weights differ")
