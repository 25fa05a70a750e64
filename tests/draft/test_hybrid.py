"""LookupThenModel: prompt lookup first, the draft model when the lookup has nothing worth drafting."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from verispec.draft import DraftRequest, ModelDrafter  # noqa: E402
from verispec.draft.hybrid import LookupThenModel  # noqa: E402
from verispec.draft.ngram import NGramDrafter  # noqa: E402
from verispec.noise import NoiseSource  # noqa: E402
from verispec.sampling import SamplingParams  # noqa: E402

REPEATS = [5, 6, 7, 8, 9, 10, 11, 5, 6, 7]  # "5 6 7" occurred before: lookup drafts 8 9 10 11 ...
FRESH = [1, 17, 42, 99, 5, 63, 8, 120, 33]  # no repeated bigram at the end: nothing to look up


def request(tokens, params=SamplingParams(0.0)):
    return DraftRequest(list(tokens), NoiseSource(0).step(0, 0), params, 1, "onehot")


@pytest.fixture
def hybrid(tiny_backend):
    return LookupThenModel(NGramDrafter(), ModelDrafter(tiny_backend))


def test_lookup_first(hybrid):
    tree = hybrid.propose(request(REPEATS), 4)
    assert tree.tokens[0].tolist() == [8, 9, 10, 11]
    assert hybrid.match_length >= 3 and hybrid._used is hybrid.lookup


def test_model_when_nothing_to_look_up(hybrid, tiny_backend):
    tree = hybrid.propose(request(FRESH), 3)
    assert hybrid.match_length == 0 and hybrid._used is hybrid.fallback
    ref = ModelDrafter(tiny_backend).propose(request(FRESH), 3)  # the model's own greedy draft
    assert tree.tokens.tolist() == ref.tokens.tolist()


def test_gate_sends_short_matches_to_the_model(hybrid):
    asked = []

    def gate(match, available):
        asked.append(match)
        return 0 if match > 0 else 2  # lookup not worth it; the model may draft 2

    hybrid.gate = gate
    tree = hybrid.propose(request(REPEATS), 4)
    assert asked[0] > 0 and asked[-1] == 0
    assert tree.num_nodes == 2 and hybrid.match_length == 0
    hybrid.gate = lambda match, available: 0  # nothing is worth drafting
    assert hybrid.propose(request(REPEATS), 4) is None


def test_catch_up_is_reported(hybrid):
    hybrid.prepare(FRESH)  # lazy: the model prefills when it first drafts
    assert hybrid.fallback._tokens == []
    hybrid.propose(request(FRESH), 2)
    assert hybrid.catchup_s > 0 and hybrid.fallback._tokens[: len(FRESH)] == FRESH
    hybrid.propose(request(FRESH + [3, 4, 5, 6, 7, 8]), 2)  # six tokens decoded without the model
    assert hybrid.catchup_s > 0 and hybrid.fallback._tokens[: len(FRESH) + 6] == FRESH + [3, 4, 5, 6, 7, 8]


def test_model_drafter_prefills_in_prepare(tiny_backend):
    drafter = ModelDrafter(tiny_backend)
    drafter.prepare(FRESH)
    assert drafter._tokens == FRESH
    drafter.propose(request(FRESH), 2)
    assert drafter.catchup_s < 0.05  # nothing left to catch up on


def test_bad_parts():
    with pytest.raises(ValueError, match="NGramDrafter and a model drafter"):
        LookupThenModel(NGramDrafter(), NGramDrafter())


def test_sampled_target_gets_iid_drafts(hybrid):
    """Lookup chains as draws from point masses; the model's own q when it drafts."""
    t1 = SamplingParams(1.0)
    tree = hybrid.propose(DraftRequest(list(REPEATS), NoiseSource(0).step(0, 0), t1, 1, "iid"), 4)
    assert tree.kind == "iid" and tree.tokens[0].tolist() == [8, 9, 10, 11]
    q = tree.q[0]  # [N + 1, V]: row i is the law of node i's token
    assert torch.equal(q[torch.arange(4), tree.tokens[0]], torch.ones(4, dtype=q.dtype))
    assert torch.equal(q.sum(-1)[:4], torch.ones(4, dtype=q.dtype))
    tree = hybrid.propose(DraftRequest(list(FRESH), NoiseSource(0).step(0, 0), t1, 2, "iid"), 3)
    assert tree.kind == "iid" and hybrid.match_length == 0 and tree.paths.shape[1] == 2  # the model's k = 2
