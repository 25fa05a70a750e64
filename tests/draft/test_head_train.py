"""`verispec train-head`'s held-out split: the same conversations whatever the order, so a head trained further is
never scored on what it trained on."""
from __future__ import annotations

import random

from verispec.draft.head_train import held_out_split


def test_the_held_out_split_does_not_depend_on_order_or_seed():
    rng = random.Random(0)
    convs = [([rng.randrange(50000) for _ in range(rng.randrange(5, 40))], 3) for _ in range(640)]
    held, train = held_out_split(convs)
    assert 8 <= len(held) <= 40 and len(held) + len(train) == 640
    assert not {tuple(c[0]) for c in held} & {tuple(c[0]) for c in train}
    shuffled = convs[:]
    random.Random(1).shuffle(shuffled)
    assert {tuple(c[0]) for c in held_out_split(shuffled)[0]} == {tuple(c[0]) for c in held}
    assert {tuple(c[0]) for c in held_out_split(convs[:320])[0]} == {tuple(c[0]) for c in held if c in convs[:320]}


def test_a_tiny_set_still_holds_one_out():
    convs = [([1, 2, 3], 1), ([4, 5], 1)]
    held, train = held_out_split(convs, every=10**9)
    assert len(held) == 1 and len(train) == 1
