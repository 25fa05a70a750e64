"""Verifiers: pure, batched functions of (DraftTree, p, noise), registered by name."""
from __future__ import annotations

from .base import Verifier, check_inputs, sample_categorical
from .block import Block
from .gumbel import Gumbel, GumbelList
from .rrs import Greedy, SpecInfer, SpecInferWOR, Token
from .spectr import SpecTr

REGISTRY: dict[str, Verifier] = {}


def register(rule: Verifier) -> Verifier:
    """Add a rule to the registry under `rule.name`."""
    REGISTRY[rule.name] = rule
    return rule


for _rule in (Greedy(), Token(), Block(), SpecInfer(), SpecInferWOR(), SpecTr(), Gumbel(), GumbelList(),
              GumbelList(strong=True)):
    register(_rule)


def get_verifier(name: str) -> Verifier:
    """The registered rule called `name` (clear error listing the known names)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown verifier {name!r}; known: {', '.join(REGISTRY)}") from None


__all__ = ["Verifier", "REGISTRY", "register", "get_verifier", "check_inputs", "sample_categorical"]
