"""`checks.int_at_least`, the int check behind every count argument's clear ValueError."""
import pytest

from verispec.checks import int_at_least


@pytest.mark.parametrize("x, low, ok", [
    (3, 1, True), (1, 1, True), (0, 0, True), (-7, None, True),
    (0, 1, False), (-1, 0, False),
    (True, 0, False), (False, None, False),  # a bool is never a count
    (2.0, 1, False), ("3", 1, False), (None, None, False),
])
def test_int_at_least(x, low, ok):
    assert int_at_least(x, low) is ok


def test_callers_refuse_bools_and_floats():
    """Three callers in three layers give a ValueError naming the argument, not a TypeError."""
    from verispec.draft.value_tree import TreeShape
    from verispec.noise import NoiseSource

    with pytest.raises(ValueError, match="nodes"):
        TreeShape(nodes=True)
    with pytest.raises(ValueError, match="seed"):
        NoiseSource(1.5)
    from verispec.bench.datasets import load_dataset
    with pytest.raises(ValueError, match="per_category"):
        load_dataset(per_category=0)
