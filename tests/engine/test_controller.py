"""The controller: speculate only where the cost curve and the acceptance estimate say it pays."""
from __future__ import annotations

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
    assert abs(over.cost(0) - 0.5) < 1e-6 and abs(over.cost(10) - 1.0) < 1e-6
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
    assert abs(c.scale - 2.0) < 1e-6
    assert abs(c.cost(9) - (1 + 2 * (BF16(9) - 1))) < 1e-9
    assert c.choose((False, 4), 8) < before
    c.observe_target(5, 1e9)  # one absurd measurement cannot push it past its clamp
    assert c.scale <= 4.0


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

