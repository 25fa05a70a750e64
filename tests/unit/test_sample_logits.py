"""`sample_logits` / `inverse_cdf`, the engine's sampled plain step: the law of the draw, enumerated over a grid
of uniforms, is the law `probs_from_logits` gives, for every sampling transform; broken variants fail the same
check. Every test runs twice: with the C draw (`verispec.draw`) where it builds, and with the torch path."""
import numpy as np
import pytest
import torch

from verispec import draw, native
from verispec.noise import NoiseSource, Purpose
from verispec.sampling import SamplingParams, inverse_cdf, probs_from_logits, sample_logits
from verispec.verify import get_verifier
from verispec.verify.base import sample_categorical

V = 1000  # three full blocks of 256 and a tail of 232
GRID = 10000


@pytest.fixture(autouse=True, params=["kernel", "torch"])
def path(request, monkeypatch):
    """Which path `sample_logits` takes for a softmax without top-k, top-p or min-p."""
    draw.kernel.cache_clear()
    if request.param == "torch":
        monkeypatch.setenv("VERISPEC_NO_KERNEL", "1")
    elif draw.kernel() is None:
        if native.unavailable():
            pytest.skip(f"no C helpers here: {native.unavailable()}")
        pytest.fail(f"the C draw should build here: {draw.why_not()}")  # a broken kernel fails, not skips
    yield request.param
    draw.kernel.cache_clear()


def _logits(seed=0, scale=3.0):
    return (torch.randn(V, generator=torch.Generator().manual_seed(seed)) * scale).to(torch.float32)


def _grid_law(sampler, logits, params):
    """The law of sampler(logits, params, u) for u uniform on (0, 1), enumerated at GRID midpoints: each token's
    set of u is an interval, so its share of the grid is within 1 / GRID of its probability."""
    counts = np.zeros(V)
    for j in range(GRID):
        counts[sampler(logits, params, (j + 0.5) / GRID)] += 1
    return counts / GRID


def _max_error(sampler, logits, params):
    want = probs_from_logits(logits, params).numpy()
    return np.abs(_grid_law(sampler, logits, params) - want).max()


PARAMS = [SamplingParams(1.0), SamplingParams(0.5), SamplingParams(2.0), SamplingParams(1.0, top_k=50),
          SamplingParams(0.7, top_p=0.9), SamplingParams(1.0, min_p=0.01),
          SamplingParams(0.7, top_k=40, top_p=0.9, min_p=0.05)]  # llama.cpp's defaults, near enough


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: f"T{p.temperature}-k{p.top_k}-p{p.top_p}-m{p.min_p}")
def test_law_equals_probs_from_logits(params):
    assert _max_error(sample_logits, _logits(), params) <= 1.0 / GRID + 1e-12


def test_broken_variants_fail_the_same_check(path):
    logits, params = _logits(), SamplingParams(0.5)
    no_temperature = lambda x, p, u: sample_logits(x, SamplingParams(1.0), u)  # noqa: E731
    assert _max_error(no_temperature, logits, params) > 10.0 / GRID

    if path == "kernel":  # the kernel itself told the wrong temperature
        assert _max_error(lambda x, p, u: draw.draw(x, 1.0, u), logits, params) > 10.0 / GRID

    def tail_dropped(x, p, u):  # a two-level search that misses the last, partial block
        w = probs_from_logits(x, p).numpy()
        return inverse_cdf(w[: V - V % 256], u)
    assert _max_error(tail_dropped, _logits(scale=0.5), SamplingParams(1.0)) > 10.0 / GRID


def test_same_token_as_the_tensor_sampler():
    """The token for a given uniform is the one `sample_categorical` picks from p (a different draw only within
    rounding of a CDF boundary, which these 500 uniforms do not hit)."""
    rng = np.random.default_rng(0)
    for seed, params in enumerate(PARAMS):
        logits = _logits(seed)
        p = probs_from_logits(logits[None], params)
        for u in rng.random(500 // len(PARAMS)):
            assert sample_logits(logits, params, float(u)) == int(sample_categorical(p, torch.tensor([u]))[0])


def test_zero_mass_tokens_never_drawn_at_the_ends():
    logits = _logits()
    logits[V - 300:] = float("-inf")  # the last block and a half carry no mass
    for params in (SamplingParams(1.0), SamplingParams(1.0, top_k=3)):
        allowed = set(torch.nonzero(probs_from_logits(logits, params) > 0).view(-1).tolist())
        for u in (2.0**-53, 1e-9, 0.5, 1 - 1e-12, 1 - 2.0**-53):
            assert sample_logits(logits, params, u) in allowed
    w = np.zeros(V)
    w[[3, 600]] = [1.0, 2.0]
    assert [inverse_cdf(w, u) for u in (1e-9, 0.33, 0.34, 1 - 2.0**-53)] == [3, 3, 600, 600]


def test_small_vocabulary_and_greedy():
    x = torch.tensor([0.0, 2.0, 1.0])
    assert sample_logits(x, SamplingParams(0.0), 0.99) == 1
    p = torch.softmax(x.double(), -1)
    assert [sample_logits(x, SamplingParams(1.0), u) for u in (float(p[0]) * 0.99, float(p[0] + p[1] * 0.5), 0.999)] == [0, 1, 2]


@pytest.mark.parametrize("bad, match", [(torch.tensor([0.0, float("nan")]), "NaN"),
                                        (torch.full((3,), float("-inf")), "no finite"),
                                        (torch.zeros(2, 3), r"\[V\]"), (torch.zeros(0), r"\[V\]")])
def test_bad_logits_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        sample_logits(bad, SamplingParams(1.0), 0.5)


@pytest.mark.parametrize("name", ["token", "block", "specinfer", "gumbel", "greedy"])
def test_plain_logits_matches_plain(name):
    """The engine's plain step from logits draws the token each rule's `plain` draws from p (the inverse-CDF rules
    through `sample_logits`, the others through their own `plain`)."""
    rule, noise = get_verifier(name), NoiseSource(3).step(0, 5)
    params = SamplingParams(0.0 if name == "greedy" else 0.8)
    for seed in range(5):
        logits = _logits(seed)
        want = int(rule.plain(probs_from_logits(logits[None], params), noise, 1)[0])
        assert rule.plain_logits(logits, params, noise, 1) == want
    assert noise.uniform(Purpose.RESIDUAL, 0).shape == (1,)


def test_top_k_ties_at_the_kth_keep_them_all():
    """Top-k keeps every token tied with the k-th (`probs_from_logits`); the candidates' shortcut steps aside."""
    logits = _logits()
    kth = logits.topk(10).values[-1]
    logits[[3, 500, 999]] = kth  # three more tokens at the k-th value
    params = SamplingParams(1.0, top_k=10)
    law = _grid_law(sample_logits, logits, params)
    assert np.count_nonzero(law) == 13
    assert np.abs(law - probs_from_logits(logits, params).numpy()).max() <= 1.0 / GRID + 1e-12


def test_top_k_nan_raises():
    logits = _logits()
    logits[7] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        sample_logits(logits, SamplingParams(1.0, top_k=5), 0.5)
