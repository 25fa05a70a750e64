"""ModelDrafter on the tiny random-init Llama (torch backend)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from verispec.backends import load_backend  # noqa: E402
from verispec.certify.sampled import toy_drafts  # noqa: E402
from verispec.draft import DraftRequest, ModelDrafter  # noqa: E402
from verispec.noise import NoiseSource  # noqa: E402
from verispec.sampling import SamplingParams, probs_from_logits  # noqa: E402
from verispec.tree import VerifyResult  # noqa: E402

PROMPT = [1, 17, 42, 99, 5, 63, 8, 120, 33]
GAMMA = 4
PARAMS = {"t1": SamplingParams(1.0), "topk": SamplingParams(0.7, top_k=20, top_p=0.9),
          "greedy": SamplingParams(0.0)}
QTOL = 1e-5  # q from a chained / tree pass vs a fresh single pass (logits agree to ~1e-5)


@pytest.fixture(scope="module")
def reference(tiny_llama_dir):
    """An independent instance of the draft model: the laws a fresh reset gives."""
    return load_backend("torch", tiny_llama_dir)


@pytest.fixture
def resets(tiny_backend, monkeypatch):
    """Counts the full resets of the drafter's backend (rollbacks must not need one)."""
    calls = []
    original = tiny_backend.reset
    monkeypatch.setattr(tiny_backend, "reset", lambda tokens: (calls.append(len(tokens)), original(tokens)))
    return calls


def law(backend, tokens: list[int], params: SamplingParams) -> torch.Tensor:
    """[1, V] next-token law after `tokens` from a fresh reset."""
    backend.reset(tokens)
    return probs_from_logits(backend.score(), params)


class ModelLaw:
    """The ToyLM interface (V, rows(code, length)) over a real model after a fixed context,
    so that `certify.sampled.toy_drafts` draws from the draft model with the reference noise rules."""

    def __init__(self, backend, context: list[int], params: SamplingParams):
        self.backend, self.context, self.params, self.V = backend, context, params, backend.vocab_size

    def rows(self, code: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        c, n = int(code.reshape(-1)[0]), int(torch.as_tensor(length).reshape(-1)[0])
        prefix = []
        for _ in range(n):
            c, x = divmod(c, self.V)
            prefix.append(x)
        return law(self.backend, self.context + prefix[::-1], self.params)


def _req(tokens, params="t1", k=1, kind="iid", seed=7, position=11):
    return DraftRequest(list(tokens), NoiseSource(seed).step(3, position), PARAMS[params], k, kind)


def _drafts(tree) -> list[list[int]]:
    return [[int(tree.tokens[0, n]) for n in tree.paths[0, j].tolist() if n >= 0] for j in range(tree.k)]


@pytest.mark.parametrize("params", ["t1", "topk"])
@pytest.mark.parametrize("kind,k", [("iid", 1), ("wor", 1), ("onehot", 1), ("gumbel", 1),
                                    ("iid", 3), ("wor", 3), ("onehot", 3), ("gumbel", 3)])
def test_drafts_follow_q_like_toy_drafts(tiny_backend, reference, params, kind, k):
    """q rows = probs_from_logits of the draft model on each drafted prefix, and the tokens are
    drawn from them with exactly the noise usage of certify.sampled.toy_drafts."""
    req = _req(PROMPT, params, k, kind)
    tree = ModelDrafter(tiny_backend).propose(req, GAMMA)
    zero = torch.zeros(1, dtype=torch.int64)
    want = toy_drafts(ModelLaw(reference, PROMPT, req.params), zero, zero, GAMMA, k, kind, req.noise)
    assert tree.kind == kind and tree.gamma == GAMMA
    assert torch.equal(tree.tokens, want.tokens) and torch.equal(tree.parent, want.parent)
    assert torch.equal(tree.paths, want.paths)
    torch.testing.assert_close(tree.q, want.q, atol=QTOL, rtol=0)
    assert tiny_backend.n_past == len(PROMPT) + (GAMMA if k == 1 else 0)  # chains stay committed


@pytest.mark.parametrize("k", [1, 2])
def test_gumbel_drafts_are_race_argmins(tiny_backend, k):
    req = _req(PROMPT, "t1", k, "gumbel")
    tree = ModelDrafter(tiny_backend).propose(req, GAMMA)
    rows = tree.row_of_prefix()  # [1, k, gamma]
    for j in range(tree.k):
        for t in range(GAMMA):
            q = tree.q[:, rows[0, j, t]]  # [1, V]
            assert int(tree.tokens[0, tree.paths[0, j, t]]) == int(req.noise.race(t, q, torch.tensor([j]))[0])


@pytest.mark.parametrize("kind,k", [("iid", 1), ("gumbel", 1), ("wor", 3)])
def test_same_noise_same_drafts(tiny_backend, tiny_llama_dir, kind, k):
    drafter = ModelDrafter(tiny_backend)
    first = _drafts(drafter.propose(_req(PROMPT, k=k, kind=kind), GAMMA))
    drafter.reset()
    assert _drafts(drafter.propose(_req(PROMPT, k=k, kind=kind), GAMMA)) == first
    other = ModelDrafter(load_backend("torch", tiny_llama_dir))
    assert _drafts(other.propose(_req(PROMPT, k=k, kind=kind), GAMMA)) == first
    seeds = {tuple(map(tuple, _drafts(drafter.propose(_req(PROMPT, k=k, kind=kind, seed=s), GAMMA))))
             for s in range(6)}
    assert len(seeds) > 1  # the drafts do depend on the noise


def test_greedy_drafts_are_argmax_for_every_kind(tiny_backend, reference):
    ctx, want = list(PROMPT), []
    for _ in range(GAMMA):
        want.append(int(law(reference, ctx, PARAMS["greedy"]).argmax()))
        ctx.append(want[-1])
    for kind in ("iid", "wor", "onehot", "gumbel"):
        tree = ModelDrafter(tiny_backend).propose(_req(PROMPT, "greedy", 1, kind), GAMMA)
        assert _drafts(tree) == [want]
    tree = ModelDrafter(tiny_backend).propose(_req(PROMPT, "greedy", 3, "wor"), GAMMA)
    assert _drafts(tree) == [want]  # a one-hot q has one token to draw without replacement
    tree = ModelDrafter(tiny_backend).propose(_req(PROMPT, "greedy", 3, "onehot"), GAMMA)
    top3 = law(reference, PROMPT, PARAMS["t1"])[0].topk(3).indices.tolist()
    assert [d[0] for d in _drafts(tree)] == top3 and _drafts(tree)[0] == want  # onehot ranks untempered


def _result(tree, j: int, tau: int, y: int) -> VerifyResult:
    """A verdict accepting the first tau tokens of draft j, then y."""
    path = torch.full((1, tree.gamma), -1, dtype=torch.int64)
    path[0, :tau] = tree.paths[0, j, :tau]
    return VerifyResult(path, torch.tensor([tau]), torch.tensor([y]), torch.tensor([tau == tree.gamma]))


@pytest.mark.parametrize("k,j", [(1, 0), (3, 0), (3, 2)])
@pytest.mark.parametrize("tau", [0, 2, GAMMA])
def test_observe_rolls_the_cache_back(tiny_backend, reference, resets, k, j, tau):
    drafter = ModelDrafter(tiny_backend)
    req = _req(PROMPT, "topk", k, "iid")
    tree = drafter.propose(req, GAMMA)
    drafter.observe(req, tree, _result(tree, j, tau, 77))
    ctx = PROMPT + _drafts(tree)[j][:tau] + [77]
    assert tiny_backend.n_past == len(ctx) and tiny_backend.pending == 77
    nxt = drafter.propose(_req(ctx, "topk", k, "iid", seed=8, position=11 + tau + 1), GAMMA)
    for t, x in enumerate([None] + _drafts(nxt)[0][:1]):  # q after ctx and after its first draft
        prefix = ctx + ([] if x is None else [x])
        torch.testing.assert_close(nxt.q[:, nxt.row_of_prefix()[0, 0, t]], law(reference, prefix, PARAMS["topk"]),
                                   atol=QTOL, rtol=0)
    assert resets == [len(PROMPT)]  # only the first propose prefilled; the rest was rolled back


def test_sync_catches_up_with_unseen_tokens_and_resets_on_divergence(tiny_backend, reference, resets):
    drafter = ModelDrafter(tiny_backend)
    drafter.propose(_req(PROMPT), GAMMA)
    ctx = PROMPT + [5, 6, 7]  # plain target steps the drafter never observed
    tree = drafter.propose(_req(ctx), 2)
    torch.testing.assert_close(tree.q[:, 0], law(reference, ctx, PARAMS["t1"]), atol=QTOL, rtol=0)
    assert resets == [len(PROMPT)]
    other = [1, 9, 9, 4]  # a new request without reset(), sharing token 0: rolled back to it
    tree = drafter.propose(_req(other), 2)
    torch.testing.assert_close(tree.q[:, 0], law(reference, other, PARAMS["t1"]), atol=QTOL, rtol=0)
    assert resets == [len(PROMPT)]
    other = [2, 9, 9, 4]  # nothing in common: a full reset
    tree = drafter.propose(_req(other), 2)
    torch.testing.assert_close(tree.q[:, 0], law(reference, other, PARAMS["t1"]), atol=QTOL, rtol=0)
    assert resets == [len(PROMPT), len(other)]
    tiny_backend.reset([1, 2, 3])  # someone else moved the backend: detected, re-synced
    tree = drafter.propose(_req(other), 2)
    torch.testing.assert_close(tree.q[:, 0], law(reference, other, PARAMS["t1"]), atol=QTOL, rtol=0)


def test_context_limit(tiny_backend):
    n_ctx = tiny_backend.n_ctx
    drafter = ModelDrafter(tiny_backend)
    ctx = [(7 * i) % 128 for i in range(n_ctx - 3)]
    assert drafter.propose(_req(ctx), GAMMA).gamma == 2  # drafts + the next token must fit
    assert drafter.propose(_req(ctx + [1, 2]), GAMMA) is None


class _Stub:
    """Just what the vocabulary check reads from a backend."""

    def __init__(self, vocab_size, decode):
        self.vocab_size, self.name = vocab_size, "stub"
        self.tokenizer = SimpleNamespace(decode=lambda ids, skip_special=False: decode(ids[0]))


def test_vocabulary_check(tiny_backend, reference):
    drafter = ModelDrafter(tiny_backend, target=reference)  # the same tokenizer: fine
    text = reference.tokenizer.decode
    with pytest.raises(ValueError, match="vocabulary"):
        drafter.check_compatible(_Stub(100, lambda i: text([i])))
    with pytest.raises(ValueError, match="token id 40"):
        drafter.check_compatible(_Stub(128, lambda i: "other" if i == 40 else text([i])))
    with pytest.raises(ValueError, match="vocabulary"):
        ModelDrafter(tiny_backend, target=_Stub(129, lambda i: text([i])))


def test_bad_requests(tiny_backend):
    with pytest.raises(ValueError):
        ModelDrafter(object())
    drafter = ModelDrafter(tiny_backend)
    with pytest.raises(ValueError):
        drafter.propose(_req(PROMPT, kind="bogus"), GAMMA)
    with pytest.raises(ValueError):
        drafter.propose(_req(PROMPT), 0)
    with pytest.raises(ValueError):
        drafter.propose(_req([]), GAMMA)
    batch = DraftRequest(PROMPT, NoiseSource(0).step([0, 1], 0), PARAMS["t1"], 1, "iid")
    with pytest.raises(ValueError, match="batch"):
        drafter.propose(batch, GAMMA)
