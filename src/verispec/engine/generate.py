"""The speculative decoding loop (one request), gpt-fast style: draft, score once, verify, commit.

    context -> drafter.propose -> DraftTree -> target.score (one pass) -> p -> verifier -> commit

Sampling parameters are applied identically to p and q (`sampling.py`); noise is keyed by
(seed, request, purpose, position) so a run is reproducible and, for the Gumbel rules, the same
text comes out whatever the drafter and whether speculation is on or off.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..draft.base import common_prefix
from ..noise import NoiseSource
from ..sampling import SamplingParams, probs_from_logits
from ..verify import Verifier, get_verifier
from ..verify.rrs import Greedy
from .controller import Controller, mode
from .detok import IncrementalText
from .stats import SpecStats


@dataclass
class Generation:
    text: str
    tokens: list[int]
    stats: SpecStats


def draft_kind(verifier: Verifier, drafter, params: SamplingParams) -> str:
    """The draft kind to ask the drafter for, or a clear error if the pair cannot work together."""
    kinds = getattr(drafter, "kinds", ())
    prefer = {"gumbel": ("gumbel", "onehot", "iid"), "gls": ("gumbel", "onehot", "iid"),
              "gls-strong": ("gumbel", "onehot", "iid"), "specinfer-wor": ("wor", "onehot")}
    order = prefer.get(verifier.name, ("onehot", "iid", "wor", "gumbel") if params.greedy else ("iid", "onehot", "wor"))
    for kind in order:
        if kind in kinds and kind in verifier.draft_kinds:
            return kind
    raise ValueError(f"verifier {verifier.name!r} accepts drafts of kind {', '.join(verifier.draft_kinds)}; "
                     f"drafter {type(drafter).__name__} produces {', '.join(kinds) or 'none'}")


class Engine:
    """Speculative generation on one target backend with one drafter and one verifier."""

    def __init__(self, backend, drafter=None, verifier: str | Verifier = "auto", k: int = 1,
                 controller: Controller | None = None):
        self.backend, self.drafter, self.k = backend, drafter, k
        self.verifier_name = verifier if isinstance(verifier, str) else verifier.name
        self._verifier = None if isinstance(verifier, str) else verifier
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.controller = controller
        self.request_id = 0
        self._header = None  # the chat template's tokens around an empty user turn (`shared_prefix`)

    def verifier_for(self, params: SamplingParams) -> Verifier:
        if self._verifier is not None:
            return self._verifier
        if self.verifier_name == "auto":
            return get_verifier("greedy" if params.greedy else ("block" if self.k == 1 else "specinfer"))
        return get_verifier(self.verifier_name)

    def shared_prefix(self, ids: list[int], chat: bool) -> int:
        """How many leading tokens of a chat prompt are the template's own, as in every request that keeps the
        default system turn (SmolLM2: 24): the backend may keep their prefill between requests (`reset`'s
        ``shared``). 0 for a raw prompt or where fewer than 8 tokens are shared."""
        if not chat:
            return 0
        if self._header is None:
            try:
                self._header = self.backend.tokenizer.apply_chat_template([{"role": "user", "content": ""}])
            except Exception:  # a template that refuses an empty turn: nothing is shared
                self._header = []
        n = common_prefix(self._header, ids[:-2])  # at least the last two prompt tokens stay the request's own
        return n if n >= 8 else 0

    def encode(self, prompt: str | list[dict], chat: bool) -> list[int]:
        tok = self.backend.tokenizer
        if isinstance(prompt, list):
            if not prompt:
                raise ValueError("messages is empty")
            return tok.apply_chat_template(prompt)
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("prompt is empty")
        return tok.apply_chat_template([{"role": "user", "content": prompt}]) if chat else tok.encode(prompt, add_special=True)

    def generate(self, prompt, params: SamplingParams = SamplingParams(), max_new_tokens: int = 256,
                 stop: list[str] | tuple[str, ...] = (), seed: int = 0, chat: bool = True,
                 on_text: Callable[[str], None] | None = None) -> Generation:
        gen = self.stream(prompt, params, max_new_tokens, stop, seed, chat)
        try:
            while True:
                delta = next(gen)
                if on_text:
                    on_text(delta)
        except StopIteration as fin:
            return fin.value

    def stream(self, prompt, params: SamplingParams = SamplingParams(), max_new_tokens: int = 256,
               stop: list[str] | tuple[str, ...] = (), seed: int = 0, chat: bool = True) -> Iterator[str]:
        """Yields text deltas; returns the Generation (StopIteration.value). A character whose bytes the last
        token left incomplete (cut by max_new_tokens) is left out of the text; its tokens stay in `tokens`."""
        if not isinstance(max_new_tokens, int) or max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
        if not isinstance(params, SamplingParams):
            raise ValueError("params must be a SamplingParams")
        be, tok = self.backend, self.backend.tokenizer
        rule = self.verifier_for(params)
        kind = draft_kind(rule, self.drafter, params) if self.drafter is not None else None
        ctl = self.controller
        if kind is not None and ctl is not None and ctl.fixed_gamma is None:  # a tree drafter sizes its trees by
            self.drafter.price = lambda n: ctl.price(n, not params.greedy, model=True)  # what a row costs here
        any_tree = params.greedy and kind == "onehot" and isinstance(rule, Greedy)  # greedy verification takes any tree
        if rule.max_drafts is not None and self.k > rule.max_drafts:
            raise ValueError(f"verifier {rule.name!r} takes at most {rule.max_drafts} draft(s), got k = {self.k}")
        prompt_ids = self.encode(prompt, chat)
        if len(prompt_ids) >= be.n_ctx:
            raise ValueError(f"prompt is {len(prompt_ids)} tokens, longer than the context ({be.n_ctx})")
        stats = SpecStats(prompt_tokens=len(prompt_ids))
        t_start = time.perf_counter()
        be.reset(prompt_ids, shared=self.shared_prefix(prompt_ids, chat or isinstance(prompt, list)))
        if self.drafter is not None:
            self.drafter.reset()
            self.drafter.prepare(prompt_ids)
        stats.time_prefill = time.perf_counter() - t_start
        source, request = NoiseSource(seed), self.request_id
        self.request_id += 1
        out: list[int] = []
        emitted_text = ""
        detok = IncrementalText(lambda ids: tok.decode(ids, skip_special=True))  # decode(out), not redone whole
        eos = tok.eos_token_ids
        while True:
            room = min(max_new_tokens - len(out), be.n_ctx - be.n_past)
            if room <= 0:
                stats.finish_reason = "length"
                break
            noise = source.step(request, len(out))
            req, tree = self._draft(prompt_ids + out, noise, params, kind, room - 1, stats, any_tree)
            if tree is None:
                new = self._plain_step(rule, params, noise, stats)
            else:
                new = self._spec_step(rule, req, tree, stats)
            stats.target_calls += 1
            finish = None
            for i, t in enumerate(new):
                if t in eos:
                    new, finish = new[:i], "stop"
                    stats.eos = 1
                    break
            out += new[: max_new_tokens - len(out)]
            text = detok.text(out)
            cut = min((text.find(s) for s in stop if s and s in text), default=-1)
            if cut >= 0:
                text, finish = text[:cut], "stop"
            if finish is None and len(out) >= max_new_tokens:
                finish = "length"
            safe = text.rstrip("\ufffd")  # hold back a partial UTF-8 character; one cut by the end stays out
            if len(safe) > len(emitted_text) and safe.startswith(emitted_text):
                yield safe[len(emitted_text):]
                emitted_text = safe
            if finish:
                stats.finish_reason = finish
                break
        stats.emitted = len(out)
        stats.time_total = time.perf_counter() - t_start
        return Generation(emitted_text, out, stats)

    # ---- one iteration ---------------------------------------------------------------------
    @staticmethod
    def _bucket(match_length: int, params: SamplingParams) -> tuple[float, int]:
        """The controller's confidence bucket for a draft: (its sampling mode, 0 or the temperature; the n-gram
        match length capped at 8, 0 for a draft model's draft)."""
        return (mode(params), min(match_length, 8))

    def _draft(self, context, noise, params, kind, room, stats, any_tree=False):
        """(the DraftRequest, the DraftTree to verify or None for a plain step)."""
        if self.drafter is None or room < 1:
            return None, None
        from ..draft.base import DraftRequest

        t0 = time.perf_counter()
        req = DraftRequest(context, noise, params, self.k, kind, any_tree)
        ctl = self.controller
        tree, searched = None, False
        fallback = getattr(self.drafter, "model_fallback", False)  # a draft model behind the lookup
        if getattr(self.drafter, "cheap", False):  # the drafter looks, the controller decides how far
            if ctl is None:
                tree = self.drafter.propose(req, min(room, 8))
            elif ctl.worth_drafting(mode(params), min(room, ctl.max_gamma), model=fallback):  # else skip the search
                self.drafter.gate = lambda match, available: ctl.choose(self._bucket(match, params), available)
                tree = self.drafter.propose(req, min(room, ctl.max_gamma))
                searched = True
        else:
            gamma = ctl.choose(self._bucket(0, params), available=room) if ctl is not None else min(room, 4)
            if gamma > 0:
                tree = self.drafter.propose(req, gamma)
        if tree is not None and tree.num_nodes > self.backend.n_ctx - self.backend.n_past:
            tree = None  # a tree wider than the context's room (its depth fits: budget < room): a plain step
        self._last_draft_s = time.perf_counter() - t0
        stats.time_draft += self._last_draft_s
        if searched and not fallback:  # what a lookup search was worth: its time, or its draft's expected gain
            ctl.observe_search(mode(params), seconds=self._last_draft_s, gained=None if tree is None else ctl.gain(
                self._bucket(self.drafter.match_length, params), tree.gamma, tree.num_nodes))
        return req, tree

    def _plain_step(self, rule, params, noise, stats) -> list[int]:
        ahead = self.backend.pending_scored  # the prefill computed this step's logits: no pass to learn from
        t0 = time.perf_counter()
        if params.greedy:  # the argmax found where the logits lie (`Backend.score_argmax`)
            y = int(self.backend.score_argmax()[0])
            t1 = time.perf_counter()
        else:  # the logits where they lie (`Backend.score_next`), drawn from without a probability tensor
            logits = self.backend.score_next()
            t1 = time.perf_counter()
            y = rule.plain_logits(logits, params, noise, self.k)
        stats.time_target += t1 - t0
        stats.time_verify += time.perf_counter() - t1
        if self.controller is not None and not ahead:
            self.controller.observe_target(1, t1 - t0)
        self.backend.commit([], y)
        stats.plain_steps += 1
        return [y]

    def _spec_step(self, rule, req, tree, stats) -> list[int]:
        t0 = time.perf_counter()
        if req.params.greedy and isinstance(rule, Greedy):  # argmax per row is all greedy needs
            best = self.backend.score_argmax(tree.tokens[0], tree.parent[0])  # [N + 1]
            t1 = time.perf_counter()
            res = Greedy.from_argmax(tree, best.unsqueeze(0))
        else:
            logits = self.backend.score(tree.tokens[0], tree.parent[0])
            t1 = time.perf_counter()
            res = rule(tree, probs_from_logits(logits, req.params).unsqueeze(0), req.noise)
        t2 = time.perf_counter()
        tau = int(res.num_accepted[0])
        path = [int(n) for n in res.path[0, :tau]]
        y = int(res.next_token[0])
        self.backend.commit(path, y)
        self.drafter.observe(req, tree, res)
        stats.time_target += t1 - t0
        stats.time_verify += t2 - t1
        stats.drafts += 1
        stats.draft_tokens += tree.num_nodes
        stats.accepted += tau
        tried = min(tree.gamma, tau + 1)  # draft positions on the verified path
        stats.record(tried, tau)
        if self.controller is not None:
            drafting = self._last_draft_s - getattr(self.drafter, "catchup_s", 0.0)  # resuming after plain steps is a one-off
            match = getattr(self.drafter, "match_length", 0)  # 0: a draft model drafted
            self.controller.observe_cost(tree.num_nodes, t2 - t1 + drafting, not req.params.greedy, match == 0)
            self.controller.observe_target(tree.num_nodes + 1, t1 - t0)
            self.controller.update(self._bucket(match, req.params), tried, tau)
        return [int(tree.tokens[0, n]) for n in path] + [y]
