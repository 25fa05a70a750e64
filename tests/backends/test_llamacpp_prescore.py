"""The llama.cpp backend scores pending in the prompt's prefill (`pending_scored`), as llama-cpp-python computes a
request's first token: one batched token instead of a pass of its own (~12 ms of 2 cores' ~50 for a 40-token chat
prompt: reset + first token, `/tmp` timing in docs/speed.md §34). On the build tested a token's logits are the same
bits whether it is scored alone or in a batch (see test_llamacpp_backend), so every check below is exact."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

ATOL = 1e-3


@pytest.fixture(scope="module")
def backend(llamacpp_q4):
    return llamacpp_q4  # conftest.py


@pytest.fixture(scope="module")
def prompt(backend):
    return backend.tokenizer.apply_chat_template([{"role": "user", "content": "Name three primary colours."}])


def _steps(backend, prompt, after_reset, n=8):
    """Logit rows [n, V] of n greedy plain steps after reset and `after_reset()`."""
    backend.reset(prompt, shared=24)
    after_reset()
    rows = []
    for _ in range(n):
        rows.append(backend.score()[0])
        backend.commit([], int(rows[-1].argmax()))
    return torch.stack(rows)


def _forget(backend):
    backend._prescored = None  # the next pass drops pending's cell and decodes it again: the old way


def test_the_first_step_reads_the_prefills_row_and_the_cache_holds_pending_once(backend, prompt):
    """After reset the first plain step runs no pass and gives the row a pass of pending gives; 8 greedy steps
    on are the rows of steps whose first one ran a pass. Controls: the rows of another pending token (what a
    prescore of the wrong row would read) differ; pending's cell kept *and* decoded again (a prescore that forgot
    its cell is in the cache) is refused by llama.cpp."""
    backend.reset(prompt)
    assert backend.pending_scored
    first = backend.score_next().clone()
    assert not backend.pending_scored
    assert torch.equal(backend.score_next(), first)  # a pass of pending alone
    passed = _steps(backend, prompt, lambda: _forget(backend))
    assert torch.equal(_steps(backend, prompt, lambda: None), passed)
    other = prompt[:-1] + [prompt[-1] + 1]
    assert not torch.allclose(_steps(backend, other, lambda: None), passed, atol=ATOL)

    def twice():
        _forget(backend)
        backend._dirty = False

    with pytest.raises(RuntimeError, match="llama_decode"):
        _steps(backend, prompt, twice)


def test_a_tree_or_a_truncate_after_reset_sees_pending_once(backend, prompt):
    """A draft tree scored right after reset re-scores pending with it (its cell dropped first): the rows of
    the same tree scored after a pass; a truncate right after reset leaves no prescored row behind."""
    tokens, parent = torch.tensor([504, 28, 30, 13]), torch.tensor([-1, 0, 0, 1])
    backend.reset(prompt)
    fresh = backend.score(tokens, parent).clone()
    backend.reset(prompt)
    _forget(backend)
    assert torch.equal(backend.score(tokens, parent), fresh)
    backend.reset(prompt)
    backend.truncate(len(prompt) - 2, prompt[-2])
    assert not backend.pending_scored
    row = backend.score_next().clone()
    backend.reset(prompt[:-1])
    _forget(backend)
    assert torch.equal(backend.score_next(), row)


def test_the_engine_learns_no_cost_from_a_step_the_prefill_computed(backend, monkeypatch):
    """The controller hears every target pass but the first step's (no pass ran). Control: a backend that did
    not score pending ahead is heard at every step."""
    from verispec.engine.generate import Engine
    from verispec.sampling import SamplingParams

    class Spy:
        def __init__(self):
            self.calls = []

        def observe_target(self, k, seconds):
            self.calls.append(k)

    for ahead in (True, False):
        if not ahead:
            monkeypatch.setattr(type(backend), "pending_scored", property(lambda self: False))
        spy = Spy()
        g = Engine(backend, None, "greedy", controller=spy).generate("Count to five.", SamplingParams(temperature=0),
                                                                     max_new_tokens=6)
        assert len(spy.calls) == g.stats.target_calls - ahead
