"""The speculative decoding engine: the loop, the controller, the statistics."""
from .controller import Controller, CostCurve
from .generate import Engine, Generation
from .stats import SpecStats

__all__ = ["Engine", "Generation", "SpecStats", "Controller", "CostCurve"]
