"""Counter-based randomness keyed by (seed, request, purpose, position, row).

Every random number verispec draws is a pure function of its key, never of RNG state
that advances per call. That makes runs reproducible whatever the batch composition,
and it is what the two keying disciplines of ALGORITHMS.md need:

* **step-keyed** draws (`StepNoise.uniform`): keyed by the *start position of the
  iteration* plus a slot number. Every iteration of a request starts at a new position
  (each emits >= 1 token), so no uniform is ever reused across iterations. Block
  verification reads uniforms past the accepted prefix, so position-keyed uniforms would
  bias it (ALGORITHMS.md §2.6); step keys make that impossible.
* **position-keyed** draws (`StepNoise.exponential`): keyed by the *absolute output
  position* and a row. The Gumbel rules (Daliri et al. arXiv 2408.07978; Rowan et al.
  arXiv 2506.05632) need exactly this: the drafter and the verifier read the same noise
  at the same absolute position, so the output is the target-only Gumbel sample.

The generator is SplitMix64 (Steele, Lea, Flood 2014) used as a hash: each 64-bit key is
mixed field by field, then element i of a vector is mix(key + (i+1)*golden). Uniforms
are (top 52 bits + 0.5) / 2**52, so they lie strictly inside (0, 1) (53 bits could round to 1.0).
"""
from __future__ import annotations

from enum import IntEnum

import numpy as np
import torch

from .checks import int_at_least

# SplitMix64 constants as signed int64 (torch has no uint64 arithmetic).
_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15
_M1 = -4658895280553007687  # 0xBF58476D1CE4E5B9
_M2 = -7723592293110705685  # 0x94D049BB133111EB
_LOW34, _LOW37, _LOW33, _LOW52 = (1 << 34) - 1, (1 << 37) - 1, (1 << 33) - 1, (1 << 52) - 1


class Purpose(IntEnum):
    """What a draw is for. Draws for different purposes never share a key."""

    ACCEPT = 1  # acceptance tests of verifiers
    RESIDUAL = 2  # recovered / bonus tokens of verifiers
    DRAFT = 3  # drafters sampling their proposals
    GUMBEL = 4  # shared exponential race noise (drafter and verifier alike)
    ENGINE = 5  # plain decoding without speculation


def _mix(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64 finaliser on int64 tensors (logical shifts emulated with masks)."""
    z = (z ^ ((z >> 30) & _LOW34)) * _M1
    z = (z ^ ((z >> 27) & _LOW37)) * _M2
    return z ^ ((z >> 31) & _LOW33)


_U64 = (1 << 64) - 1


def _mix_int(z: int) -> int:
    """`_mix` on one unsigned 64-bit Python int (bit-identical; ~50x cheaper than tensor ops on a scalar)."""
    z = ((z ^ (z >> 30)) * (_M1 & _U64)) & _U64
    z = ((z ^ (z >> 27)) * (_M2 & _U64)) & _U64
    return z ^ (z >> 31)


def _fold(z: torch.Tensor, field: torch.Tensor | int) -> torch.Tensor:
    """Absorb one int64 field into a running key."""
    f = torch.as_tensor(field, dtype=torch.int64)
    if z.numel() == 1 and f.numel() == 1:  # the common B = 1 case, in Python ints
        v = _mix_int((int(z) + (int(f) + 1) * (_GOLDEN & _U64)) & _U64)
        v = v - (1 << 64) if v >> 63 else v
        return torch.tensor(v, dtype=torch.int64).reshape((1,) * max(z.dim(), f.dim()))  # both numel 1
    return _mix(z + f * _GOLDEN + _GOLDEN)


def _key(*fields: torch.Tensor | int) -> torch.Tensor:
    """Hash a tuple of int64 fields (broadcast together) into one 64-bit key."""
    z = torch.as_tensor(0x5EED, dtype=torch.int64)
    for f in fields:
        z = _fold(z, f)
    return z


_STRIDES: dict[int, np.ndarray] = {}


def _strides(n: int) -> np.ndarray:
    """(i + 1) * golden for i < n, as uint64 (cached: the same vector serves every row)."""
    if n not in _STRIDES:
        _STRIDES[n] = np.arange(1, n + 1, dtype=np.uint64) * np.uint64(_GOLDEN & (2**64 - 1))
    return _STRIDES[n]


def _uniform(key: torch.Tensor, n: int | None) -> torch.Tensor:
    """Uniforms in (0, 1), float64: shape key.shape (n None) or key.shape + (n,) for elements 0..n-1."""
    if n is None:
        if key.numel() == 1:  # B = 1: in Python ints, bit-identical
            z = _mix_int((int(key) + (_GOLDEN & _U64)) & _U64)
            return torch.full(key.shape, ((z >> 12) + 0.5) * (2.0**-52), dtype=torch.float64)
        z = _mix(key + _GOLDEN)
        return (((z >> 12) & _LOW52).to(torch.float64) + 0.5) * (2.0**-52)
    return _hash_uniform(key.contiguous().numpy().view(np.uint64)[..., None] + _strides(n))


def uniform_at(key: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Random access: element `index` [..., m] of the uniform vectors keyed by key [...] -> [..., m]."""
    idx = (index.contiguous().numpy().astype(np.uint64) + np.uint64(1)) * np.uint64(_GOLDEN & (2**64 - 1))
    return _hash_uniform(key.contiguous().numpy().view(np.uint64)[..., None] + idx)


def _hash_uniform(z: np.ndarray) -> torch.Tensor:
    """SplitMix64 finaliser in numpy uint64, in place, then the top 53 bits as a uniform in (0, 1).

    Bit-identical to `_mix` on int64 tensors.
    """
    with np.errstate(over="ignore"):
        z ^= z >> np.uint64(30)
        z *= np.uint64(_M1 & (2**64 - 1))
        z ^= z >> np.uint64(27)
        z *= np.uint64(_M2 & (2**64 - 1))
        z ^= z >> np.uint64(31)
    z >>= np.uint64(12)
    u = z.astype(np.float64)
    u += 0.5
    u *= 2.0**-52
    return torch.from_numpy(u)


class NoiseSource:
    """The one source of randomness of a run: `NoiseSource(seed).step(request, position)`."""

    def __init__(self, seed: int = 0):
        if not int_at_least(seed):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.seed = seed

    def step(self, request: torch.Tensor | int, position: torch.Tensor | int) -> "StepNoise":
        """Noise for one iteration of B requests.

        request:  [B] int64 request ids (or an int for B = 1)
        position: [B] int64 absolute output position of the first token this iteration emits
        """
        if type(request) is int and type(position) is int:  # one request (the engine's every step): no tensors
            return StepNoise(self.seed, request, position)  # until a draw needs them (`uniform_scalar` does not)
        request = torch.as_tensor(request, dtype=torch.int64).reshape(-1)
        position = torch.as_tensor(position, dtype=torch.int64).reshape(-1)
        if request.shape != position.shape:
            if request.numel() == 1:
                request = request.expand_as(position)
            elif position.numel() == 1:
                position = position.expand_as(request)
            else:
                raise ValueError(f"request {tuple(request.shape)} and position {tuple(position.shape)} differ")
        return StepNoise(self.seed, request, position)

    def __repr__(self) -> str:
        return f"NoiseSource(seed={self.seed})"


class StepNoise:
    """Keyed draws for one iteration of a batch of requests (see the module docstring)."""

    def __init__(self, seed: int, request: torch.Tensor | int, position: torch.Tensor | int):
        """request, position: [B] int64, or two ints for one request (B = 1; tensors made when first read)."""
        self.seed, self._request, self._position = seed, request, position
        self.batch = 1 if isinstance(request, int) else request.numel()
        self._base: dict[int, torch.Tensor] = {}

    @property
    def request(self) -> torch.Tensor:
        """[B] int64 request ids."""
        if isinstance(self._request, int):
            self._request = torch.tensor([self._request])
        return self._request

    @property
    def position(self) -> torch.Tensor:
        """[B] int64 output positions of the first token this iteration emits."""
        if isinstance(self._position, int):
            self._position = torch.tensor([self._position])
        return self._position

    def _step_key(self, purpose: Purpose) -> torch.Tensor:
        """[B] key of (seed, request, purpose, position), cached per purpose."""
        if purpose not in self._base:
            self._base[purpose] = _key(self.seed, self.request, int(purpose), self.position)
        return self._base[purpose]

    def uniform(self, purpose: Purpose, slot: int | torch.Tensor, n: int | None = None) -> torch.Tensor:
        """Step-keyed uniforms: [B] (n None) or [B, n]; slot may be an int or [B] / [B, m]."""
        slot = torch.as_tensor(slot, dtype=torch.int64)
        base = self._step_key(purpose).view((self.batch,) + (1,) * max(slot.dim() - 1, 0))
        key = _fold(base, slot)
        if key.dim() == 1 and key.shape[0] != self.batch:
            key = key.expand(self.batch)
        return _uniform(key, n)

    def uniform_scalar(self, purpose: Purpose, slot: int) -> float:
        """``uniform(purpose, slot)[0]`` for one request (B = 1), all in Python ints: the same bits without the
        tensor ops of five key folds (0.01 against ~0.2 ms, once every plain step), from the step's ints where
        `NoiseSource.step` was given ints."""
        if self.batch != 1:
            raise ValueError(f"uniform_scalar is for one request, this step has {self.batch}")
        request = self._request if isinstance(self._request, int) else int(self._request[0])
        position = self._position if isinstance(self._position, int) else int(self._position[0])
        z = 0x5EED
        for f in (self.seed, request, int(purpose), position, int(slot)):
            z = _mix_int((z + (f + 1) * (_GOLDEN & _U64)) & _U64)  # `_fold`
        z = _mix_int((z + (_GOLDEN & _U64)) & _U64)  # `_uniform`'s element 0
        return ((z >> 12) + 0.5) * (2.0**-52)

    def row_keys(self, depth: int | torch.Tensor, rows: int | torch.Tensor,
                 purpose: Purpose = Purpose.GUMBEL) -> torch.Tensor:
        """Keys of the position-keyed noise rows at absolute position `position + depth`.

        depth: int or [B] -> keys [B, R]; or [B, D] -> keys [B, D, R].
        rows: int (rows 0..rows-1) or [R] row ids.
        """
        rows_t = torch.arange(rows) if isinstance(rows, int) else torch.as_tensor(rows, dtype=torch.int64)
        depth = torch.as_tensor(depth, dtype=torch.int64)
        pos = self.position.view(-1, 1) + (depth.view(-1, 1) if depth.dim() < 2 else depth)  # [B, D]
        key = _key(self.seed, self.request.view(-1, 1, 1), int(purpose), pos[..., None], rows_t.view(1, 1, -1))
        key = key.expand(self.batch, pos.shape[1], rows_t.numel()).contiguous()
        return key if depth.dim() == 2 else key[:, 0]

    def exponential(self, depth: int | torch.Tensor, rows: int | torch.Tensor, n: int,
                    purpose: Purpose = Purpose.GUMBEL) -> torch.Tensor:
        """Position-keyed Exp(1) noise rows, materialised: [B, R, n] float64 (see `race.exponentials`)."""
        from .race import exponentials

        return exponentials(self.row_keys(depth, rows, purpose), n)

    def race(self, depth: int | torch.Tensor, P: torch.Tensor, rows: int | torch.Tensor = 1,
             active: torch.Tensor | None = None, purpose: Purpose = Purpose.GUMBEL) -> torch.Tensor:
        """argmin_x min_{r active} E[r, x] / P[b, x] over the rows at position + depth, exactly, lazily.

        P: [B, V] weights; active: [B, R] bool (default all). Returns [B] int64. Equals
        `race_argmin(P, exponential(depth, rows, V).masked_fill(~active, inf).amin(1))`.
        """
        from .race import lazy_race

        keys = self.row_keys(depth, rows, purpose)
        return lazy_race(P, keys, active)
