"""lab protocol: the derived two-party maximal coupling keeps both marginals and reaches 1 - TV."""
import numpy as np
import pytest
from scipy.stats import chisquare

from verispec.lab.protocol import (
    _draw,
    budget_curve,
    compare_bits,
    first_differing_digit,
    index_bits,
    run_protocol,
)

P = np.array([0.4, 0.3, 0.2, 0.1, 0.0])
Q = np.array([0.1, 0.2, 0.2, 0.25, 0.25])
TV = 0.5 * np.abs(P - Q).sum()


def _chi2_ok(x, probs, n):
    support = probs > 0
    counts = np.bincount(x, minlength=probs.size)
    assert counts[~support].sum() == 0
    return chisquare(counts[support], probs[support] * n).pvalue > 1e-4


def test_digits_and_bits():
    assert first_differing_digit(0.5, 0.25) == 1  # .1 vs .01
    assert first_differing_digit(0.75, 0.5) == 2  # .11 vs .10
    assert first_differing_digit(0.0, 2.0 ** -40) == 40
    assert compare_bits(0.75, 0.5) == 4
    assert index_bits(1) == 1 and index_bits(10) == 4 and index_bits(16) == 4 and index_bits(49152) == 16
    with pytest.raises(ValueError):
        first_differing_digit(1.5, 0.2)


def test_marginals_exact_and_match_is_one_minus_tv():
    n = 20000
    res = run_protocol(P, Q, n, np.random.default_rng(0))
    assert _chi2_ok(res["a"], P, n) and _chi2_ok(res["b"], Q, n)
    match = (res["a"] == res["b"]).mean()
    assert abs(match - (1 - TV)) <= 5 * np.sqrt(TV * (1 - TV) / n)
    # expected number of indices sent is exactly 2 (1 + TV * 1/TV)
    assert abs((1 + res["rounds"]).mean() - 2) < 0.1
    assert (res["bits"] >= index_bits(5) * (1 + res["rounds"]) + 2 * (1 + res["rounds"])).all()
    m, over = budget_curve(res, np.array([0, 10_000]))
    assert m[0] == 0 and over[0] == 1 and over[1] == 0 and m[1] == match


def test_broken_variant_fails_the_marginal_check():
    # broken Bob: on rejection output a fresh y ~ Q without the residual test -> law min(P,Q) + TV Q, not Q
    n, rng = 20000, np.random.default_rng(1)
    cP, cQ = np.cumsum(P), np.cumsum(Q)
    a = _draw(cP, rng.uniform(size=n))
    keep = rng.uniform(size=n) * P[a] < Q[a]
    b = np.where(keep, a, _draw(cQ, rng.uniform(size=n)))
    assert not _chi2_ok(b, Q, n)


def test_reproducible_by_seed_and_bad_input():
    r1 = run_protocol(P, Q, 500, np.random.default_rng(5))
    r2 = run_protocol(P, Q, 500, np.random.default_rng(5))
    r3 = run_protocol(P, Q, 500, np.random.default_rng(6))
    assert all((r1[k] == r2[k]).all() for k in r1) and not (r1["bits"] == r3["bits"]).all()
    with pytest.raises(ValueError):
        run_protocol(P, Q[:4], 10, np.random.default_rng(0))
    with pytest.raises(ValueError):
        run_protocol(P * 2, Q, 10, np.random.default_rng(0))
