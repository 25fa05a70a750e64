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
are (top 53 bits + 0.5) / 2**53, so they lie strictly inside (0, 1).
"""
from __future__ import annotations

from enum import IntEnum

import torch

# SplitMix64 constants as signed int64 (torch has no uint64 arithmetic).
_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15
_M1 = -4658895280553007687  # 0xBF58476D1CE4E5B9
_M2 = -7723592293110705685  # 0x94D049BB133111EB
_LOW34, _LOW37, _LOW33, _LOW53 = (1 << 34) - 1, (1 << 37) - 1, (1 << 33) - 1, (1 << 53) - 1


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


def _key(*fields: torch.Tensor | int) -> torch.Tensor:
    """Hash a tuple of int64 fields (broadcast together) into one 64-bit key."""
    z = torch.as_tensor(0x5EED, dtype=torch.int64)
    for f in fields:
        z = _mix(z + torch.as_tensor(f, dtype=torch.int64) * _GOLDEN + _GOLDEN)
    return z


def _uniform(key: torch.Tensor, n: int | None) -> torch.Tensor:
    """Uniforms in (0, 1), float64: shape key.shape (n None) or key.shape + (n,)."""
    if n is None:
        z = _mix(key + _GOLDEN)
    else:
        idx = torch.arange(1, n + 1, dtype=torch.int64) * _GOLDEN
        z = _mix(key.unsqueeze(-1) + idx)
    return (((z >> 11) & _LOW53).to(torch.float64) + 0.5) * (2.0**-53)


class NoiseSource:
    """The one source of randomness of a run: `NoiseSource(seed).step(request, position)`."""

    def __init__(self, seed: int = 0):
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.seed = seed

    def step(self, request: torch.Tensor | int, position: torch.Tensor | int) -> "StepNoise":
        """Noise for one iteration of B requests.

        request:  [B] int64 request ids (or an int for B = 1)
        position: [B] int64 absolute output position of the first token this iteration emits
        """
        request = torch.as_tensor(request, dtype=torch.int64).reshape(-1)
        position = torch.as_tensor(position, dtype=torch.int64).reshape(-1)
        if request.shape != position.shape:
            if request.numel() == 1:
                request = request.expand_as(position)
            else:
                raise ValueError(f"request {tuple(request.shape)} and position {tuple(position.shape)} differ")
        return StepNoise(self.seed, request, position)

    def __repr__(self) -> str:
        return f"NoiseSource(seed={self.seed})"


class StepNoise:
    """Keyed draws for one iteration of a batch of requests (see the module docstring)."""

    def __init__(self, seed: int, request: torch.Tensor, position: torch.Tensor):
        self.seed, self.request, self.position = seed, request, position
        self.batch = request.numel()

    def uniform(self, purpose: Purpose, slot: int | torch.Tensor, n: int | None = None) -> torch.Tensor:
        """Step-keyed uniforms: [B] (n None) or [B, n]; slot may be an int or [B] / [B, m]."""
        slot = torch.as_tensor(slot, dtype=torch.int64)
        lead = (self.batch,) + (1,) * max(slot.dim() - 1, 0)
        key = _key(self.seed, self.request.view(lead), int(purpose), self.position.view(lead), slot)
        if key.dim() == 0:
            key = key.expand(self.batch)
        return _uniform(key, n)

    def exponential(self, depth: int | torch.Tensor, rows: int | torch.Tensor, n: int,
                    purpose: Purpose = Purpose.GUMBEL) -> torch.Tensor:
        """Position-keyed Exp(1) noise rows for absolute position `position + depth`.

        depth: int or [B]; rows: int (row 0..rows-1) or [R] row ids.
        Returns [B, R, n] float64 (R = rows if int).
        """
        rows_t = torch.arange(rows) if isinstance(rows, int) else torch.as_tensor(rows, dtype=torch.int64)
        pos = (self.position + torch.as_tensor(depth, dtype=torch.int64)).view(-1, 1)
        key = _key(self.seed, self.request.view(-1, 1), int(purpose), pos, rows_t.view(1, -1))
        key = key.expand(self.batch, rows_t.numel())
        return -torch.log(_uniform(key, n))
