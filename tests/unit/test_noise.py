"""Counter-based noise: reproducible, batch-independent, well separated keys, sane marginals."""
import math

import pytest
import torch

from verispec.noise import NoiseSource, Purpose, StepNoise

_U64 = (1 << 64) - 1


def _batch(n=100, seed=7):
    g = torch.Generator().manual_seed(seed)
    req = torch.randperm(10_000, generator=g)[:n].long() * 13 + 5
    pos = torch.randint(0, 1 << 40, (n,), generator=g)
    return req, pos


# ---------------------------------------------------------------- reproducibility


def test_same_key_same_value_across_sources_and_calls():
    req, pos = _batch(8)
    a = NoiseSource(123).step(req, pos)
    b = NoiseSource(123).step(req.clone(), pos.clone())
    for _ in range(2):  # a second call must not advance any hidden state
        assert torch.equal(a.uniform(Purpose.ACCEPT, 3), b.uniform(Purpose.ACCEPT, 3))
        assert torch.equal(a.uniform(Purpose.RESIDUAL, 0, n=17), b.uniform(Purpose.RESIDUAL, 0, n=17))
        assert torch.equal(a.exponential(2, 3, 50), b.exponential(2, 3, 50))


def test_different_seed_different_values():
    req, pos = _batch(8)
    a = NoiseSource(1).step(req, pos).uniform(Purpose.ACCEPT, 0, n=64)
    b = NoiseSource(2).step(req, pos).uniform(Purpose.ACCEPT, 0, n=64)
    assert not torch.isclose(a, b).any()


@pytest.mark.parametrize("seed", [1.0, True, "3", None])
def test_bad_seed_raises(seed):
    with pytest.raises(ValueError, match="seed"):
        NoiseSource(seed)


def test_step_shapes_and_broadcast():
    s = NoiseSource(0).step(5, torch.tensor([10, 11, 12]))  # int request broadcast to 3 positions
    assert s.batch == 3
    assert s.uniform(Purpose.ACCEPT, 0).shape == (3,)
    assert s.uniform(Purpose.ACCEPT, 0, n=4).shape == (3, 4)
    assert s.uniform(Purpose.ACCEPT, torch.zeros(3, 5, dtype=torch.long)).shape == (3, 5)
    assert s.exponential(0, 2, 7).shape == (3, 2, 7)
    assert s.exponential(0, torch.tensor([4, 0, 9]), 7).shape == (3, 3, 7)
    assert s.exponential(0, 2, 7).dtype == torch.float64
    with pytest.raises(ValueError, match="request"):
        NoiseSource(0).step(torch.tensor([1, 2]), torch.tensor([1, 2, 3]))


# ---------------------------------------------------------------- batch composition


def test_independent_of_batch_composition():
    req, pos = _batch(100)
    src = NoiseSource(99)
    big = src.step(req, pos)
    slots_big = torch.arange(100 * 6).view(100, 6) % 11
    u_big = big.uniform(Purpose.ACCEPT, 4)
    un_big = big.uniform(Purpose.RESIDUAL, 2, n=33)
    us_big = big.uniform(Purpose.ACCEPT, slots_big)
    depth = torch.arange(100) % 5
    e_big = big.exponential(depth, 3, 40)
    perm = torch.randperm(100, generator=torch.Generator().manual_seed(1))
    shuffled = src.step(req[perm], pos[perm])
    assert torch.equal(shuffled.uniform(Purpose.ACCEPT, 4), u_big[perm])
    assert torch.equal(shuffled.exponential(depth[perm], 3, 40), e_big[perm])
    for r in (0, 17, 99):
        one = src.step(req[r : r + 1], pos[r : r + 1])
        assert torch.equal(one.uniform(Purpose.ACCEPT, 4), u_big[r : r + 1])
        assert torch.equal(one.uniform(Purpose.RESIDUAL, 2, n=33), un_big[r : r + 1])
        assert torch.equal(one.uniform(Purpose.ACCEPT, slots_big[r : r + 1]), us_big[r : r + 1])
        assert torch.equal(one.exponential(int(depth[r]), 3, 40), e_big[r : r + 1])
        scalar = src.step(int(req[r]), int(pos[r]))  # plain ints, B = 1
        assert torch.equal(scalar.uniform(Purpose.ACCEPT, 4), u_big[r : r + 1])


def test_slot_tensor_matches_int_slot():
    req, pos = _batch(5)
    s = NoiseSource(4).step(req, pos)
    grid = s.uniform(Purpose.ACCEPT, torch.arange(6).expand(5, 6))
    for j in range(6):
        assert torch.equal(grid[:, j], s.uniform(Purpose.ACCEPT, j))
    per_row = s.uniform(Purpose.ACCEPT, torch.tensor([0, 1, 2, 3, 4]))
    assert torch.equal(per_row, grid[torch.arange(5), torch.arange(5)])


def test_uniform_scalar_is_uniform_bit_for_bit():
    """The one-request shortcut of the engine's plain step draws the very bits `uniform` draws."""
    req, pos = _batch(20)
    for seed in (0, 4, -3, 1 << 40):
        for r, p in zip(req.tolist(), pos.tolist()):
            s = NoiseSource(seed).step(r, p)
            for purpose in Purpose:
                for slot in (0, 1, 7):
                    assert s.uniform_scalar(purpose, slot) == float(s.uniform(purpose, slot)[0])
    assert NoiseSource(0).step(1, 2).uniform_scalar(Purpose.RESIDUAL, 0) != \
        NoiseSource(0).step(1, 3).uniform_scalar(Purpose.RESIDUAL, 0)
    with pytest.raises(ValueError, match="one request"):
        NoiseSource(0).step(torch.tensor([1, 2]), 0).uniform_scalar(Purpose.RESIDUAL, 0)


# ---------------------------------------------------------------- key separation


def _all_distinct(*xs):
    flat = torch.cat([x.reshape(-1) for x in xs])
    return flat.unique().numel() == flat.numel()


def test_purposes_slots_positions_requests_give_different_draws():
    req, pos = _batch(20)
    src = NoiseSource(5)
    s = src.step(req, pos)
    by_purpose = [s.uniform(p, 0, n=8) for p in Purpose]
    by_slot = [s.uniform(Purpose.ACCEPT, j, n=8) for j in range(1, 6)]
    by_pos = [src.step(req, pos + d).uniform(Purpose.ACCEPT, 0, n=8) for d in range(1, 6)]
    by_req = [src.step(req + d, pos).uniform(Purpose.ACCEPT, 0, n=8) for d in range(1000, 1005)]
    assert _all_distinct(*by_purpose, *by_slot, *by_pos, *by_req)
    # rows of the exponential noise and the purpose it is drawn for are separate keys too
    e = s.exponential(0, 4, 16)
    e_other = s.exponential(0, 4, 16, purpose=Purpose.DRAFT)
    assert _all_distinct(e, e_other)


def test_elements_of_a_vector_differ_and_are_not_shifted_copies():
    s = NoiseSource(0).step(0, 0)
    u = s.uniform(Purpose.ACCEPT, 0, n=1000)[0]
    assert u.unique().numel() == 1000
    u_next = s.uniform(Purpose.ACCEPT, 1, n=1000)[0]
    assert not torch.isin(u_next, u).any()


# ---------------------------------------------------------------- marginals


def test_uniforms_strictly_inside_and_moments():
    n = 1_000_000
    req, pos = _batch(100, seed=3)
    u = NoiseSource(2024).step(req, pos).uniform(Purpose.ACCEPT, 0, n=n // 100).reshape(-1)
    assert u.dtype == torch.float64 and u.numel() == n
    assert float(u.min()) > 0.0 and float(u.max()) < 1.0
    # calibrated bounds: 6 standard errors. sd(mean) = sqrt(1/12 / n); sd(var) ~ sqrt((1/80 - 1/144) / n)
    se_mean = math.sqrt(1 / 12 / n)
    se_var = math.sqrt((1 / 80 - 1 / 144) / n)
    assert abs(float(u.mean()) - 0.5) < 6 * se_mean
    assert abs(float(u.var()) - 1 / 12) < 6 * se_var
    # and no gross non-uniformity: 100 equal bins within 6 sd of n / 100
    counts = torch.histc(u, bins=100, min=0.0, max=1.0)
    sd = math.sqrt(n * 0.01 * 0.99)
    assert float((counts - n / 100).abs().max()) < 6 * sd


def _unmix(z: int) -> int:
    """Inverse of the SplitMix64 finaliser in noise._mix (on unsigned 64-bit ints)."""

    def unxorshift(z, s):
        x = z
        for _ in range(64 // s + 1):
            x = z ^ (x >> s)
        return x & _U64

    m1, m2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
    z = unxorshift(z, 31)
    z = (z * pow(m2, -1, 1 << 64)) & _U64
    z = unxorshift(z, 27)
    z = (z * pow(m1, -1, 1 << 64)) & _U64
    return unxorshift(z, 30)


def _signed(x: int) -> int:
    x &= _U64
    return x - (1 << 64) if x >> 63 else x


def test_unmix_helper_inverts_mix():
    from verispec.noise import _mix

    for v in (0, 1, 12345, _U64, 0x9E3779B97F4A7C15):
        out = int(_mix(torch.tensor(_signed(_unmix(v)), dtype=torch.int64)))
        assert out & _U64 == v


def test_uniform_extreme_hash_stays_below_one():
    from verispec.noise import _GOLDEN, _uniform

    for z in (_U64, _U64 ^ 0x7FF):  # hashes whose top 53 bits are all ones
        key = torch.tensor(_signed(_unmix(z) - _GOLDEN), dtype=torch.int64)
        u = float(_uniform(key, None))  # a scalar draw hashes key + golden
        assert 0.0 < u < 1.0, u
        u = float(_uniform(key[None], 1)[0, 0])  # element 0 of a vector hashes key + 1 * golden too
        assert 0.0 < u < 1.0, u


def test_uniform_extreme_hash_above_zero():
    from verispec.noise import _GOLDEN, _uniform

    key = torch.tensor(_signed(_unmix(0) - _GOLDEN), dtype=torch.int64)  # hash 0: the smallest uniform
    for u in (float(_uniform(key, None)), float(_uniform(key[None], 1)[0, 0])):
        assert 0.0 < u < 1e-15


def test_exponential_marginal():
    req, pos = _batch(10, seed=9)
    e = NoiseSource(8).step(req, pos).exponential(0, 4, 25_000).reshape(-1)  # 1e6 draws
    n = e.numel()
    assert float(e.min()) > 0 and torch.isfinite(e).all()
    assert abs(float(e.mean()) - 1.0) < 6 / math.sqrt(n)  # sd(Exp(1)) = 1
    assert abs(float((e > 1).double().mean()) - math.exp(-1)) < 6 * math.sqrt(math.exp(-1) * (1 - math.exp(-1)) / n)


# ---------------------------------------------------------------- position keying


def test_exponential_keyed_by_absolute_position():
    req, pos = _batch(6)
    src = NoiseSource(31)
    for d in range(4):
        shifted = src.step(req, pos).exponential(d, 3, 64)
        direct = src.step(req, pos + d).exponential(0, 3, 64)
        assert torch.equal(shifted, direct)
    depth = torch.tensor([0, 1, 2, 3, 4, 5])  # per-request depth
    assert torch.equal(src.step(req, pos).exponential(depth, 3, 64), src.step(req, pos + depth).exponential(0, 3, 64))
    # a different depth is a different position: different noise
    assert not torch.isclose(src.step(req, pos).exponential(1, 3, 64), src.step(req, pos).exponential(0, 3, 64)).any()


def test_exponential_row_ids():
    s = NoiseSource(3).step(torch.tensor([1, 2]), torch.tensor([5, 9]))
    full = s.exponential(1, 6, 32)
    sub = s.exponential(1, torch.tensor([4, 1]), 32)
    assert torch.equal(sub, full[:, [4, 1]])
    assert _all_distinct(full)


def test_uniform_is_step_keyed_not_position_keyed():
    """Step-keyed uniforms of a later iteration starting at pos + 1 never reuse this iteration's."""
    req, pos = _batch(4)
    src = NoiseSource(0)
    now = torch.stack([src.step(req, pos).uniform(Purpose.ACCEPT, j) for j in range(16)], 1)
    later = torch.stack([src.step(req, pos + 1).uniform(Purpose.ACCEPT, j) for j in range(16)], 1)
    assert not torch.isin(later, now).any()
    assert isinstance(src.step(req, pos), StepNoise)
