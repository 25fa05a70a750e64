"""Sampling transforms: temperature, top-k, top-p, min-p, and parameter validation."""
import math

import pytest
import torch

from verispec.sampling import SamplingParams, probs_from_logits


def _logits_of(probs):
    return torch.log(torch.tensor(probs, dtype=torch.float64))


def _support(p):
    return set(torch.nonzero(p > 0).view(-1).tolist())


# ---------------------------------------------------------------- temperature


def test_temperature_zero_is_one_hot_first_argmax():
    logits = torch.tensor([[0.0, 3.0, 3.0, -1.0], [5.0, 5.0, 5.0, 5.0], [-2.0, -1.0, -3.0, -1.0]])
    p = probs_from_logits(logits, SamplingParams(temperature=0.0))
    assert torch.equal(p, torch.eye(4, dtype=torch.float64)[[1, 0, 1]])
    assert SamplingParams(temperature=0).greedy and not SamplingParams().greedy


def test_temperature_zero_ignores_truncation_and_dtype():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    p = probs_from_logits(logits, SamplingParams(temperature=0, top_k=5, top_p=0.3, min_p=0.5), dtype=torch.float32)
    assert p.dtype == torch.float32
    assert torch.equal(p.argmax(-1), logits.argmax(-1)) and torch.equal(p.sum(-1), torch.ones(3))


def test_temperature_scales_logits():
    logits = torch.randn(4, 30, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for t in (0.25, 1.0, 2.0):
        p = probs_from_logits(logits, SamplingParams(temperature=t))
        assert torch.allclose(p, torch.softmax(logits / t, -1), atol=1e-14)


def test_low_temperature_approaches_greedy():
    logits = torch.tensor([[1.0, 2.0, 1.5]])
    p = probs_from_logits(logits, SamplingParams(temperature=1e-3))
    assert float(p[0, 1]) > 1 - 1e-12 and float(p[0, 0]) == 0.0 and not torch.isnan(p).any()


# ---------------------------------------------------------------- top-k


@pytest.mark.parametrize("k", [1, 3, 10, 49])
def test_top_k_keeps_k(k):
    logits = torch.randn(5, 50, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    p = probs_from_logits(logits, SamplingParams(top_k=k))
    assert ((p > 0).sum(-1) == k).all()
    top = logits.topk(k, -1).indices
    for b in range(5):
        assert _support(p[b]) == set(top[b].tolist())
        # the kept tokens keep their relative weights (softmax restricted to the top k)
        ref = torch.softmax(logits[b, top[b]], -1)
        assert torch.allclose(p[b, top[b]], ref, atol=1e-14)


def test_top_k_off_or_larger_than_vocab():
    logits = torch.randn(2, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = torch.softmax(logits, -1)
    for k in (0, 7, 100):
        assert torch.allclose(probs_from_logits(logits, SamplingParams(top_k=k)), ref, atol=1e-14)


def test_top_k_after_temperature():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0]], dtype=torch.float64)
    p = probs_from_logits(logits, SamplingParams(temperature=2.0, top_k=2))
    ref = torch.softmax(torch.tensor([2.0, 1.5], dtype=torch.float64), -1)
    assert torch.allclose(p[0, :2], ref, atol=1e-14) and float(p[0, 2:].abs().sum()) == 0


# ---------------------------------------------------------------- top-p


def _top_p_ref(probs, top_p):
    """Smallest prefix of the tokens sorted by probability whose mass reaches top_p."""
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    keep, mass = set(), 0.0
    for i in order:
        keep.add(i)
        mass += probs[i]
        if mass >= top_p:
            break
    return keep


@pytest.mark.parametrize("top_p,expected", [(0.3, {2}), (0.49, {2}), (0.55, {2, 0}), (0.79, {2, 0}),
                                            (0.81, {2, 0, 3}), (0.94, {2, 0, 3}), (0.96, {0, 1, 2, 3}),
                                            (1.0, {0, 1, 2, 3})])
def test_top_p_smallest_prefix(top_p, expected):
    probs = [0.3, 0.05, 0.5, 0.15]  # unsorted on purpose
    p = probs_from_logits(_logits_of(probs)[None], SamplingParams(top_p=top_p))[0]
    assert _support(p) == expected == _top_p_ref(probs, top_p)
    kept = sorted(expected)
    ref = torch.tensor([probs[i] for i in kept], dtype=torch.float64)
    assert torch.allclose(p[kept], ref / ref.sum(), atol=1e-12)


def test_top_p_random_against_reference():
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        logits = torch.randn(40, generator=g, dtype=torch.float64) * 2
        top_p = float(torch.rand((), generator=g, dtype=torch.float64)) * 0.98 + 0.01
        probs = torch.softmax(logits, -1)
        p = probs_from_logits(logits[None], SamplingParams(top_p=top_p))[0]
        assert _support(p) == _top_p_ref(probs.tolist(), top_p)
        assert float(probs[p > 0].sum()) >= top_p - 1e-12


def test_top_p_keeps_at_least_one_token():
    p = probs_from_logits(_logits_of([0.9, 0.1])[None], SamplingParams(top_p=1e-9))[0]
    assert _support(p) == {0}


# ---------------------------------------------------------------- min-p


@pytest.mark.parametrize("min_p,expected", [(0.05, {0, 1, 2, 3}), (0.2, {0, 1, 2}), (0.4, {0, 1}),
                                            (0.7, {0}), (0.99, {0})])
def test_min_p(min_p, expected):
    probs = [0.5, 0.3, 0.15, 0.05]  # min_p * max = min_p * 0.5 is the cut
    p = probs_from_logits(_logits_of(probs)[None], SamplingParams(min_p=min_p))[0]
    assert _support(p) == expected
    kept = sorted(expected)
    ref = torch.tensor([probs[i] for i in kept], dtype=torch.float64)
    assert torch.allclose(p[kept], ref / ref.sum(), atol=1e-12)


def test_top_p_and_min_p_combined():
    # top_p = 0.9 keeps {0, 1, 2}; min_p = 0.4 then cuts below 0.4 * 0.5 = 0.2
    probs = [0.5, 0.3, 0.15, 0.05]
    p = probs_from_logits(_logits_of(probs)[None], SamplingParams(top_p=0.9, min_p=0.4))[0]
    assert _support(p) == {0, 1}


# ---------------------------------------------------------------- normalisation and inputs


@pytest.mark.parametrize("params", [SamplingParams(), SamplingParams(temperature=0.7, top_k=20),
                                    SamplingParams(top_p=0.9), SamplingParams(min_p=0.1),
                                    SamplingParams(temperature=1.3, top_k=50, top_p=0.8, min_p=0.05)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rows_sum_to_one(params, dtype):
    logits = (torch.randn(3, 4, 1000, generator=torch.Generator().manual_seed(0)) * 5).to(torch.bfloat16)
    p = probs_from_logits(logits, params, dtype=dtype)
    assert p.shape == logits.shape and p.dtype == dtype
    assert (p >= 0).all() and torch.isfinite(p).all()
    assert torch.allclose(p.sum(-1), torch.ones(3, 4, dtype=dtype), atol=1e-6 if dtype == torch.float32 else 1e-12)


def test_minus_inf_logits_get_zero_mass():
    logits = torch.tensor([[0.0, float("-inf"), 1.0]])
    p = probs_from_logits(logits)
    assert float(p[0, 1]) == 0 and math.isclose(float(p.sum()), 1.0)


@pytest.mark.parametrize("params", [dict(temperature=-0.1), dict(temperature=float("nan")),
                                    dict(temperature=float("inf")), dict(temperature="1"),
                                    dict(top_p=0.0), dict(top_p=1.5), dict(top_p=-0.2), dict(top_p=float("nan")),
                                    dict(top_k=-1), dict(top_k=2.5), dict(min_p=1.0), dict(min_p=-0.1),
                                    dict(min_p=float("nan"))])
def test_bad_params_raise(params):
    name = next(iter(params))
    with pytest.raises(ValueError, match=name):
        SamplingParams(**params)


def test_nan_logits_raise():
    logits = torch.zeros(2, 5)
    logits[1, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        probs_from_logits(logits)
    with pytest.raises(ValueError, match="NaN"):
        probs_from_logits(logits, SamplingParams(temperature=0))


@pytest.mark.parametrize("shape", [(), (3, 0)])
def test_empty_logits_raise(shape):
    with pytest.raises(ValueError, match="logits"):
        probs_from_logits(torch.zeros(shape))


@pytest.mark.parametrize("top_p,n_kept", [(0.25, 1), (0.5, 2), (0.75, 3), (1.0, 4), (0.26, 2), (0.74, 3)])
def test_top_p_exact_boundary(top_p, n_kept):
    """Uniform over 4 tokens (exact 0.25s): a prefix whose mass equals top_p is enough."""
    p = probs_from_logits(torch.zeros(1, 4), SamplingParams(top_p=top_p))[0]
    assert int((p > 0).sum()) == n_kept
    assert torch.equal(p[p > 0], torch.full((n_kept,), 1.0 / n_kept, dtype=torch.float64))


def test_min_p_exact_boundary_keeps_ties():
    """A token at exactly min_p * max is kept (vLLM: keep p >= min_p * p_max)."""
    logits = torch.tensor([[math.log(2.0), 0.0, 0.0]], dtype=torch.float64)
    probs = torch.softmax(logits, -1)
    assert probs.tolist() == [[0.5, 0.25, 0.25]]  # exact in binary floating point
    p = probs_from_logits(logits, SamplingParams(min_p=0.5))
    assert _support(p[0]) == {0, 1, 2}
    p = probs_from_logits(logits, SamplingParams(min_p=0.5 + 1e-9))
    assert _support(p[0]) == {0}


# ---------------------------------------------------------------- top-p among the top candidates


def _top_p_full_sort(probs, top_p):
    """The reference: a full stable sort (descending, ties by lower token id), the prefix whose mass before each
    token is below top_p."""
    out = torch.zeros_like(probs)
    for r in range(probs.shape[0]):
        order = sorted(range(probs.shape[1]), key=lambda i: (-float(probs[r, i]), i))
        vals = probs[r, order]
        keep = (vals.cumsum(0) - vals) < top_p
        out[r, torch.tensor(order)[keep]] = vals[keep]
    return out


def _rows_needing_every_stage(V, g):
    """Peaked rows (the top 64 decide), flat rows (1,024 or all V needed) and rows of exact ties."""
    peaked = torch.randn(2, V, generator=g, dtype=torch.float64) * 8
    flat = torch.randn(2, V, generator=g, dtype=torch.float64) * 0.3
    ties = torch.randint(0, 4, (3, V), generator=g).to(torch.float64)  # few distinct values: ties at the cut
    return torch.softmax(torch.cat([peaked, flat, ties]), -1)


@pytest.mark.parametrize("V", [5, 100, 3000])
@pytest.mark.parametrize("top_p", [0.1, 0.5, 0.9, 0.97])
def test_top_p_among_candidates_equals_a_full_sort(V, top_p):
    from verispec.sampling import _top_p

    probs = _rows_needing_every_stage(V, torch.Generator().manual_seed(V))
    assert torch.equal(_top_p(probs, top_p), _top_p_full_sort(probs, top_p))


def test_top_p_trusting_the_candidates_unchecked_fails(monkeypatch):
    """The broken variant: the top 64 taken as deciding without the check; the same comparison rejects it."""
    import verispec.sampling as sampling

    probs = _rows_needing_every_stage(3000, torch.Generator().manual_seed(1))
    monkeypatch.setattr(sampling, "_decided", lambda vals, n_keep: True)
    assert not torch.equal(sampling._top_p(probs, 0.9), _top_p_full_sort(probs, 0.9))


def test_top_p_ties_broken_by_token_id():
    p = probs_from_logits(torch.zeros(1, 6), SamplingParams(top_p=0.5))[0]
    assert _support(p) == {0, 1, 2}


def test_the_input_is_left_alone_and_nan_is_found_anywhere():
    logits = torch.randn(3, 300, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    before = logits.clone()
    for params in (SamplingParams(0.5), SamplingParams(0.5, top_k=5), SamplingParams(2.0, top_p=0.8, min_p=0.1)):
        probs_from_logits(logits, params)
        assert torch.equal(logits, before)
    for where in ((0, 0), (2, 299), (1, 150)):
        bad = logits.clone()
        bad[where] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            probs_from_logits(bad, SamplingParams(1.0))
