"""The controller: speculate only where the cost curve and the acceptance estimate say it pays."""
from __future__ import annotations

import random
import time

import pytest

from verispec.engine.controller import Controller, CostCurve

Q4_1 = CostCurve([1, 2.0, 2.43, 2.85, 3.4, 4.0, 4.2, 4.47, 4.9], 0.006)  # measured shapes, 2 cores
BF16 = CostCurve([1, 1.26, 1.39, 1.57, 1.65, 1.72, 1.9, 2.07, 2.17], 0.008)


def test_flat_curve_and_long_match_speculates_far():
    assert Controller(BF16).choose((False, 8), available=8) >= 6


def test_steep_curve_needs_more_confidence_than_flat():
    bucket = (False, 3)  # prior 0.65 per token
    assert Controller(Q4_1).choose(bucket, 8) == 0
    assert Controller(BF16).choose(bucket, 8) > 0


def test_rejections_turn_speculation_off_then_exploration_probes():
    c = Controller(BF16, explore_every=4)
    bucket = (True, 4)
    for _ in range(30):
        c.update(bucket, tried=1, accepted=0)
    choices = [c.choose(bucket, 8) for _ in range(8)]
    assert choices.count(0) == 6 and choices.count(2) == 2  # off, but probed every 4th time


def test_acceptances_turn_it_on():
    c = Controller(Q4_1)
    bucket = (False, 2)
    assert c.choose(bucket, 8) == 0
    for _ in range(200):
        c.update(bucket, tried=8, accepted=8)
    assert c.choose(bucket, 8) == 8


def test_learned_overhead_fits_fixed_and_per_token_parts_and_shortens_drafts():
    c = Controller(BF16)
    free = c.choose((True, 4), 8)
    for g in [1, 2, 4, 8] * 40:  # 0.5 steps per iteration + 0.05 per drafted token, sampled target
        c.observe_cost(g, (0.5 + 0.05 * g) * BF16.step_s, sampling=True)
    over = c._overhead[(True, False)]  # sampled target, prompt-lookup drafts
    c0, c1 = over.parts()
    assert abs(c0 - 0.5) < 1e-6 and abs(c1 - 0.05) < 1e-6
    assert free > 0 and c.choose((True, 4), 8) == 0
    assert c.choose((False, 4), 8) == Controller(BF16).choose((False, 4), 8)  # greedy: its own fit


def test_drafting_is_skipped_when_no_bucket_can_pay():
    c = Controller(Q4_1, explore_every=3)
    assert not c.worth_drafting(True, 8)  # steep curve, sampled target: even a long match does not pay
    assert Controller(BF16).worth_drafting(False, 8)
    c.choose((True, 5), 8)
    c.choose((True, 5), 8)
    assert c.worth_drafting(True, 8)  # a probe is due
    assert not c.worth_drafting(True, 0)


def test_a_mode_whose_prior_says_no_still_probes_and_recovers():
    """Skipped searches never reach `choose`; one in explore_every runs anyway, so a bucket whose drafts would all
    be accepted is probed and, after a few probes, drafted from as a matter of course."""
    c = Controller(Q4_1, explore_every=4)
    asks = [c.worth_drafting(True, 8) for _ in range(8)]
    assert asks == [False, False, False, True] * 2
    drafted = []
    for step in range(2000):
        g = c.choose((True, 8), 8) if c.worth_drafting(True, 8) else 0
        if g:
            c.update((True, 8), g, g)  # the target accepts every drafted token
        drafted.append(g > 0)
    assert not any(drafted[:10]) and all(drafted[-50:])
    never = Controller(Q4_1, explore_every=4)
    for _ in range(200):  # drafts that always fail stay rare
        g = never.choose((True, 8), 8) if never.worth_drafting(True, 8) else 0
        if g:
            never.update((True, 8), g, 0)
        drafted.append(g > 0)
    assert sum(drafted[-200:]) <= 200 / 12 + 1  # a probe every (explore_every - 1) * explore_every + 1


def test_searches_that_draft_nothing_are_skipped_then_probed():
    """A mode whose prompt-lookup searches find nothing worth drafting (the embedded model at temperature 1) is
    searched once in explore_every; one whose searches draft keeps searching, and each mode keeps its own worth."""
    c = Controller(BF16, explore_every=4)
    asks = []
    for _ in range(400):
        asks.append(c.worth_drafting(1.0, 8))
        if asks[-1]:
            c.observe_search(1.0, seconds=0.05 * BF16.step_s)  # a miss: a twentieth of a step, charged twice
    assert all(asks[:20])  # the prior lets searching start
    assert sum(asks[-200:]) == 50  # then one in explore_every
    assert c.worth_drafting(0.0, 8) and c.worth_drafting(1.0, 8, model=True)  # greedy's worth; a model fallback
    c.observe_search(1.0, gained=0.5)  # a probe that drafted: searching resumes once the worth is back above 0
    for _ in range(40):
        c.observe_search(1.0, gained=0.5)
    assert all(c.worth_drafting(1.0, 8) for _ in range(20))
    keep, rng = Controller(BF16, explore_every=4), random.Random(0)
    for _ in range(400):  # one search in 8 drafts, each expected to save 0.5 steps: worth misses of 0.01 steps
        assert keep.worth_drafting(0.0, 8)
        if rng.random() < 1 / 8:
            keep.observe_search(0.0, gained=0.5)
        else:
            keep.observe_search(0.0, seconds=0.005 * BF16.step_s)


def test_a_draft_models_probes_back_off_and_lookups_do_not():
    """A probe of a draft model's bucket pays a catch-up on every token decoded since the last: each probe that
    leaves the bucket not worth it doubles the wait for the next (up to probe_backoff x explore_every); a bucket
    that earns its drafts again is probed at the usual rate once more. Prompt lookup's probes cost nothing extra
    and keep explore_every."""
    c = Controller(Q4_1, explore_every=4, probe_backoff=8)
    for bucket in ((True, 0), (True, 4)):
        for _ in range(50):
            c.update(bucket, tried=2, accepted=0)
    probes = {b: [i for i in range(200) if c.choose(b, 8)] for b in ((True, 0), (True, 4))}
    gaps = [b - a for a, b in zip([-1] + probes[(True, 0)], probes[(True, 0)])]
    assert gaps == [4, 8, 16, 32, 32, 32, 32, 32]
    assert len(probes[(True, 4)]) == 50
    for _ in range(400):
        c.update((True, 0), tried=8, accepted=8)  # the model's drafts now all succeed ...
    assert c.choose((True, 0), 8) > 0 and c._probe_every((True, 0)) == 4  # ... and the back-off is forgotten


def test_a_no_is_priced_again_after_recheck_calls():
    """Pricing every draft length at every step costs a third of a search: `worth_drafting`'s no holds for
    `recheck` calls, so news (drafts that now succeed) is acted on within that many steps."""
    c = Controller(Q4_1, explore_every=1000, recheck=8)
    priced, prices = [], c.prices
    c.prices = lambda *a: (priced.append(a), prices(*a))[1]
    assert not any(c.worth_drafting(True, 8) for _ in range(12))
    assert len(priced) == 2  # at the 1st call and the 9th
    for _ in range(200):
        c.update((True, 8), 8, 8)  # drafts now succeed
    assert [c.worth_drafting(True, 8) for _ in range(6)] == [False] * 4 + [True] * 2


def test_an_iterations_expected_gain_prices_its_draft():
    c = Controller(BF16, learn_cost=False)
    a = c.alpha((0.0, 8))
    assert c.gain((0.0, 8), 4) == pytest.approx(sum(a ** i for i in range(5)) - BF16(5))
    assert c.gain((0.0, 8), 4, nodes=7) == pytest.approx(sum(a ** i for i in range(5)) - BF16(8))
    assert c.gain((1.0, 2), 1) < c.gain((0.0, 2), 1)  # a sampled target accepts less


def test_the_engine_stops_searching_where_searches_find_nothing(tiny_llama_dir):
    """Through the engine: a prompt-lookup drafter that never finds a match is asked ~once in explore_every
    once its misses have cost more than the prior's worth; with the worth left out (a control) it is asked at
    every step."""
    from verispec.backends import load_backend
    from verispec.draft.ngram import NGramDrafter
    from verispec.engine import Engine
    from verispec.sampling import SamplingParams

    class Never(NGramDrafter):
        calls = 0

        def propose(self, req, budget):
            Never.calls += 1
            self.match_length = 0
            return None

    target = load_backend("torch", tiny_llama_dir)
    for ignore_worth in (False, True):
        ctl = Controller(CostCurve(BF16.T, 1e-7), explore_every=8)  # a step of 0.1 us: any search costs steps
        if ignore_worth:
            ctl.observe_search = lambda *a, **k: None
        eng = Engine(target, Never(), "block", controller=ctl)
        Never.calls = steps = 0
        for prompt in ("hello world w10 w11", "w40 w41 w42 w43"):
            steps += eng.generate(prompt, SamplingParams(temperature=1), 80, chat=False).stats.target_calls
        assert steps > 40
        if ignore_worth:
            assert steps - 2 <= Never.calls <= steps  # a request's last step, with no room to draft, asks none
        else:
            assert ctl._search[1.0] < 0 and 0 < Never.calls <= 2 + steps / 8


def test_a_low_temperature_starts_near_the_greedy_prior_and_keeps_its_own_counts():
    """llama.cpp samples at temperature 0.2 by default, where p is nearly a point mass: its prior lies near the
    greedy one (a prior of temperature 1 kept such requests from drafting at all), and its counts stay apart
    from temperature 1's."""
    from verispec.engine.controller import mode
    from verispec.sampling import SamplingParams

    assert [mode(SamplingParams(t)) for t in (0.0, 0.01, 0.2, 0.26, 1.0, 7.0)] == [0.0, 0.1, 0.2, 0.3, 1.0, 2.0]
    prior = Controller.prior_mean
    assert prior((0.0, 8)) == prior((False, 8)) == 0.9 and prior((True, 8)) == prior((1.0, 8)) == prior((2.0, 8))
    assert prior((1.0, 8)) < prior((0.5, 8)) < prior((0.2, 8)) < prior((0.0, 8))
    steep = CostCurve([1.0, 1.7, 2.1, 2.4, 2.7, 3.0, 3.3, 3.6, 3.9], 0.01)  # llama.cpp BF16 at a long context
    c = Controller(steep)
    assert c.worth_drafting(0.2, 8) and c.choose((0.2, 8), 8) > 0
    assert not c.worth_drafting(1.0, 8) and c.choose((1.0, 8), 8) == 0
    for _ in range(50):
        c.update((1.0, 8), 8, 0)  # temperature 1's drafts fail ...
    assert c.counts.keys() == {(1.0, 8)} and c.choose((0.2, 8), 8) > 0  # ... which says nothing of 0.2's


def test_fixed_gamma_and_available_cap():
    assert Controller(Q4_1, fixed_gamma=5).choose((False, 0), 8) == 5
    assert Controller(BF16, fixed_gamma=5).choose((False, 8), 3) == 3


def test_scale_learns_that_extra_tokens_cost_more_than_the_curve_says():
    c = Controller(BF16)
    before = c.choose((False, 4), 8)
    for _ in range(50):
        c.observe_target(1, 0.010)  # a plain step at a long context: 10 ms
        for k in (3, 5, 9):  # extra cost twice the curve's
            c.observe_target(k, 0.010 * (1 + 2 * (BF16(k) - 1)))
    assert abs(c.scale - 2.0) < 0.01  # the prior's pull is worth a few observations
    assert abs(c.cost(9) - (1 + c.scale * (BF16(9) - 1))) < 1e-9
    assert c.choose((False, 4), 8) < before
    c.observe_target(5, 1e9)  # one absurd measurement cannot push it past its clamp
    assert c.scale <= 4.0


def test_scale_is_fit_where_plain_steps_are_rare_and_the_context_grows():
    """A head drafts at every position: a few plain steps at a short context, then passes of 6-11 tokens while the
    context, and with it every pass, grows 1.5x dearer. The extra tokens cost what the curve says (scale 1). Dividing
    by a step timed at the start read that growth as extra cost; the fit over the passes' sizes does not."""
    flat = CostCurve([1, 1.03, 1.05, 1.07, 1.08, 1.09, 1.1, 1.12, 1.13, 1.15, 1.16, 1.18], 0.01)
    c = Controller(flat, max_gamma=11)
    step = lambda ctx: 0.010 * (1 + ctx / 2400)  # noqa: E731 - a plain step's time at this context
    for _ in range(3):
        c.observe_target(1, step(100))
    rng = random.Random(0)
    for i in range(300):
        k = rng.randint(6, 11)
        c.observe_target(k, step(100 + 4 * i) * flat(k))
    assert abs(c.scale - 1.0) < 0.1  # the old estimate: 4.0, its clamp
    assert abs(c.price(9) - flat(10)) < 0.02  # a 9-node tree's pass


def test_scale_stays_near_one_when_every_pass_has_the_same_size():
    """Passes of one size cannot tell a dear step from dear extra tokens: no evidence, no change."""
    c = Controller(BF16)
    for _ in range(100):
        c.observe_target(5, 0.030)
    assert c.scale == 1.0
    c.observe_target(6, 0.031)  # a single pass of another size moves it a little, not to the clamp
    assert 0.25 < c.scale < 2.0


def test_overhead_is_learnt_per_draft_source():
    """A draft model's cost (a fifth of a step per token) must not price prompt lookup's drafts, nor the reverse."""
    flat = CostCurve([1.0, 1.02, 1.04, 1.06, 1.08, 1.1, 1.12, 1.14, 1.16], 0.02)
    c = Controller(flat, max_gamma=8)
    for g in (2, 3, 4, 5, 3, 4):
        c.observe_cost(g, (0.02 + 0.25 * g) * flat.step_s, model=True)
        c.observe_cost(g, 0.01 * flat.step_s)
    lookup, model = c.rate(4, 0.8), c.rate(4, 0.8, model=True)
    assert lookup > 2.5 and model < 2.0
    assert c.choose((False, 0)) < c.choose((False, 8))  # the model drafts shorter


def test_worth_drafting_counts_a_model_fallback_only_when_there_is_one():
    steep = CostCurve([1.0, 1.6, 2.2, 2.8, 3.4, 4.0, 4.6, 5.2, 5.8], 0.02)
    c = Controller(steep, max_gamma=8)
    for _ in range(40):
        c.update((False, 8), 8, 0)  # lookup's drafts all fail at once
    assert not c.worth_drafting(False, 8)
    for _ in range(100):
        c.update((False, 0), 8, 8)  # the draft model is near-certain
    assert not c.worth_drafting(False, 8)  # no fallback: the lookup alone decides
    assert c.worth_drafting(False, 8, model=True)


def test_one_draft_length_is_charged_per_token():
    """After one expensive draft of 4 (a draft model's first), shorter drafts still look affordable."""
    flat = CostCurve([1.0, 1.02, 1.04, 1.06, 1.08, 1.1, 1.12, 1.14, 1.16], 0.016)
    c = Controller(flat, max_gamma=8)
    c.observe_cost(4, 0.020, model=True)  # 20 ms for 4 tokens: 0.31 steps per token
    assert abs(c.rate(1, 0.5, model=True) - 1.5 / (flat(2) + 0.3125)) < 1e-9
    c.update((False, 0), 1, 0)  # and its first token was rejected
    assert c.choose((False, 0)) > 0  # a bad first draft does not end speculation



def test_monotone_pools_adjacent_violators():
    from verispec.engine.controller import monotone

    assert monotone([1.0, 1.14, 1.03, 1.05, 1.06, 1.2]) == pytest.approx([1.0, 1.07, 1.07, 1.07, 1.07, 1.2], abs=0.01)
    assert monotone([1.0, 1.1, 1.2]) == [1.0, 1.1, 1.2]
    assert monotone([2.0, 1.0]) == [1.5, 1.5]


def test_measured_curve_is_non_decreasing_and_interleaved():
    """A fake backend whose passes cost 1 + 0.02 (k - 1) but whose clock jumps once mid-measurement: measured
    k by k the jump lands on the later k (a step in the curve); interleaved, it hits every k alike."""

    class Fake:
        vocab_size, calls = 50, 0

        def reset(self, prefix):
            pass

        def score(self, toks, par):
            Fake.calls += 1
            slow = 2.0 if Fake.calls > 60 else 1.0  # the machine halves its speed after 60 passes
            t = time.perf_counter() + 0.001 * slow * (1 + 0.02 * toks.numel())
            while time.perf_counter() < t:
                pass

    curve = CostCurve.measure(Fake(), k_max=8, reps=7)
    assert all(b >= a for a, b in zip(curve.T, curve.T[1:]))
    assert curve.T[-1] < 1.6  # sequential measurement would put k = 8 (after the jump) near 2.3


def test_cached_curve_is_keyed_by_the_cpu(monkeypatch):
    """A cache folder shared by two CPU types holds one curve for each: the key names the CPU by `cpu_key` (model,
    family, flags), not by ``platform.processor()`` ("x86_64" on Linux for every x86 CPU). Control: the same CPU
    reads its curve back without measuring."""
    import verispec.engine.controller as ctl

    measured = []

    def fake_measure(backend, k_max=12):
        measured.append(k_max)
        return CostCurve([1.0 + 0.1 * i for i in range(k_max)], 0.01)

    class Backend:
        name, n_threads, cost_key = "fake", 2, "x"

    monkeypatch.setattr(CostCurve, "measure", staticmethod(fake_measure))
    model = f"model-{random.random()}"  # a fresh key in this run's cache folder
    for cpu in ("cpu A", "cpu A", "cpu B", "cpu A"):
        monkeypatch.setattr(ctl, "cpu_key", lambda cpu=cpu: cpu)
        CostCurve.cached(Backend(), model, k_max=4)
    assert len(measured) == 2  # A once, B once; A's second and third calls read the cache
