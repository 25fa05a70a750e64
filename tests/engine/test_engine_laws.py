"""The engine end to end, sampled: the Gumbel rules' drafter invariance, and the law of the first
three tokens against the target's exact law (chi-square and a calibrated TV bound)."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from verispec.backends import load_backend
from verispec.draft.model import ModelDrafter
from verispec.draft.ngram import NGramDrafter
from verispec.engine import Engine
from verispec.sampling import SamplingParams, probs_from_logits

SOFT = SamplingParams(temperature=1.0, top_k=4)
PROMPT = "hello world w20 w21"


@pytest.fixture(scope="module")
def target(flat_target_dir):
    return load_backend("torch", flat_target_dir)


@pytest.fixture(scope="module")
def draft_backend(flat_draft_dir):
    return load_backend("torch", flat_draft_dir)


@pytest.mark.parametrize("rule,k", [("gumbel", 1), ("gls-strong", 2)])
def test_gumbel_rules_are_drafter_invariant(target, draft_backend, rule, k):
    """Same seed: the same text with no drafter, an n-gram drafter and a model drafter at two gammas."""
    from verispec.engine import Controller, CostCurve

    def run(drafter, gamma):
        ctl = Controller(CostCurve([1.0] * 12, 1.0), fixed_gamma=gamma) if drafter else None
        return Engine(target, drafter, rule, k=k, controller=ctl).generate(PROMPT, SOFT, 20, seed=11, chat=False)

    ref = run(None, None)
    for drafter, gamma in [(NGramDrafter(), 3), (ModelDrafter(draft_backend), 2), (ModelDrafter(draft_backend), 4)]:
        got = run(drafter, gamma)
        assert got.tokens == ref.tokens
        if isinstance(drafter, ModelDrafter):
            assert got.stats.drafts > 0  # speculation really happened


def exact_law(backend, prompt_ids, params, n, eos):
    """P(first n tokens) under the target with the sampling transform; EOS ends a sequence (padded with EOS)."""
    law = {}

    def rec(prefix, prob):
        if len(prefix) == n:
            law[tuple(prefix)] = law.get(tuple(prefix), 0) + prob
            return
        if prefix and prefix[-1] in eos:
            rec(prefix + [prefix[-1]], prob)
            return
        backend.reset(prompt_ids + prefix)
        p = probs_from_logits(backend.score()[:1], params)[0]
        for x in (p > 0).nonzero()[:, 0].tolist():
            rec(prefix + [x], prob * float(p[x]))

    rec([], 1.0)
    return law


def law_check(target, draft_backend, rule, k, n_runs=1200, n_tok=3, prompt=PROMPT, drafter=None):
    """(chi-square p-value, TV, calibrated TV bound) of the engine's first n_tok tokens vs the exact law."""
    from verispec.engine import Controller, CostCurve

    eos = target.tokenizer.eos_token_ids
    prompt_ids = target.tokenizer.encode(prompt, add_special=True)
    law = exact_law(target, prompt_ids, SOFT, n_tok, eos)
    ctl = Controller(CostCurve([1.0] * 12, 1.0), fixed_gamma=2)
    eng = Engine(target, drafter or ModelDrafter(draft_backend), rule, k=k, controller=ctl)
    counts: dict = {}
    accepted = 0
    for seed in range(n_runs):
        g = eng.generate(prompt, SOFT, n_tok, seed=seed, chat=False)
        toks = g.tokens + [next(iter(eos))] * (n_tok - len(g.tokens))
        counts[tuple(toks)] = counts.get(tuple(toks), 0) + 1
        accepted += g.stats.accepted
    assert accepted > n_runs // 4, accepted  # drafts are accepted often enough for a bias to show
    if not set(counts) <= set(law):  # a sequence the target cannot produce
        return 0.0, 1.0, 0.0
    keys = sorted(law)
    exp = np.array([law[c] * n_runs for c in keys])
    obs = np.array([counts.get(c, 0) for c in keys], dtype=float)
    big = exp >= 5
    if (~big).any():  # pool the cells with small expectation into one
        exp, obs = np.append(exp[big], exp[~big].sum()), np.append(obs[big], obs[~big].sum())
    pval = stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue
    tv = 0.5 * sum(abs(counts.get(c, 0) / n_runs - law[c]) for c in keys)
    bound = 0.5 * sum(math.sqrt(law[c] * (1 - law[c]) / n_runs) for c in keys) + math.sqrt(math.log(1e6) / (2 * n_runs))
    return pval, tv, bound


@pytest.mark.parametrize("rule,k", [("token", 1), ("block", 1), ("specinfer", 2), ("spectr", 2), ("gls", 2)])
def test_first_tokens_follow_the_target_law(target, draft_backend, rule, k):
    pval, tv, bound = law_check(target, draft_backend, rule, k)
    assert pval > 1e-5 and tv < bound, (pval, tv, bound)


def repeating_prompt(target) -> str:
    """'w20 wX w22 w20' with wX likely next (top-4 under SOFT): the lookup then drafts a token the target
    may accept, so a wrong q for lookup drafts shows in the law."""
    for w in range(8, 128):
        prompt = f"w20 w{w} w22 w20"
        ids = target.tokenizer.encode(prompt, add_special=True)
        x = target.tokenizer.encode(f"w{w}")[-1]
        target.reset(ids)
        if float(probs_from_logits(target.score()[:1], SOFT)[0, x]) > 0.1:
            return prompt
    raise AssertionError("no prompt whose repeated token is likely")


@pytest.mark.parametrize("rule", ["token", "block"])
def test_lookup_then_model_follows_the_target_law(target, draft_backend, rule):
    """The hybrid at temperature 1: lookup chains as point-mass iid drafts (the prompt repeats a
    unigram, so the lookup drafts), the model's own samples elsewhere."""
    from verispec.draft.hybrid import LookupThenModel

    drafter = LookupThenModel(NGramDrafter(min_ngram=1), ModelDrafter(draft_backend))
    used = []
    propose = drafter.propose

    def spy(req, budget):
        tree = propose(req, budget)
        used.append(drafter.match_length > 0)
        return tree

    drafter.propose = spy
    pval, tv, bound = law_check(target, draft_backend, rule, 1, prompt=repeating_prompt(target), drafter=drafter)
    assert pval > 1e-5 and tv < bound, (pval, tv, bound)
    assert any(used) and not all(used)  # both sources drafted


def test_the_law_check_rejects_a_hybrid_with_soft_lookup_laws(target, draft_backend, monkeypatch):
    """Negative control for the test above: lookup chains reported as drawn from a soft q (half the mass
    spread uniformly) though they are deterministic. Same check, it must fail."""
    from verispec.draft import hybrid

    exact = hybrid._as_point_masses

    def soft(tree, vocab):
        out = exact(tree, vocab)
        out.q = 0.5 * out.q + 0.5 / vocab
        return out

    monkeypatch.setattr(hybrid, "_as_point_masses", soft)
    drafter = hybrid.LookupThenModel(NGramDrafter(min_ngram=1), ModelDrafter(draft_backend))
    pval, tv, bound = law_check(target, draft_backend, "token", 1, prompt=repeating_prompt(target), drafter=drafter)
    assert pval < 1e-5 or tv > bound, (pval, tv, bound)


def test_the_law_check_rejects_a_biased_rule(target, draft_backend):
    """Negative control: greedy drafts verified with the drafter's soft q (a real bug class), same engine and check."""
    from verispec.certify.controls import TokenSoftQ

    pval, tv, bound = law_check(target, draft_backend, TokenSoftQ(), 1, n_runs=600)
    assert pval < 1e-5 or tv > bound, (pval, tv, bound)


@pytest.mark.parametrize("rule", ["token", "block"])
def test_head_drafter_follows_the_target_law(target, draft_backend, fit_tiny_head, flat_target_dir, rule):
    """A draft head (fitted to the flat target) drafts from q on its draft vocabulary: the first three
    tokens follow the target's law."""
    from verispec.draft.head import HeadDrafter

    drafter = HeadDrafter(target, fit_tiny_head(flat_target_dir))
    pval, tv, bound = law_check(target, draft_backend, rule, 1, drafter=drafter)
    assert pval > 1e-5 and tv < bound, (pval, tv, bound)


def test_the_law_check_rejects_a_head_reporting_a_flattened_q(target, draft_backend, fit_tiny_head, flat_target_dir):
    """Negative control for the test above: the head's drafts reported with half their law's mass spread
    over the draft vocabulary (q is not the law they were drawn from). Same check, it must fail."""
    from verispec.draft.head import HeadDrafter

    drafter = HeadDrafter(target, fit_tiny_head(flat_target_dir))
    propose, vocab = drafter.propose, drafter.head.vocab

    def flattened(req, budget):
        tree = propose(req, budget)
        spread = torch.zeros_like(tree.q)
        spread[..., vocab] = 1.0 / len(vocab)
        tree.q = torch.where(tree.q.sum(-1, keepdim=True) > 0, 0.5 * tree.q + 0.5 * spread, tree.q)
        return tree

    drafter.propose = flattened
    pval, tv, bound = law_check(target, draft_backend, "token", 1, drafter=drafter)
    assert pval < 1e-5 or tv > bound, (pval, tv, bound)
