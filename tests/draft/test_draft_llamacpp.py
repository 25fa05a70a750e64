"""ModelDrafter on llama.cpp: a second instance of the SmolLM2 GGUF drafts the target's greedy tokens."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from verispec.draft import DraftRequest, ModelDrafter  # noqa: E402
from verispec.noise import NoiseSource  # noqa: E402
from verispec.sampling import SamplingParams  # noqa: E402
from verispec.tree import VerifyResult  # noqa: E402

MESSAGES = [{"role": "user", "content": "Write a python function that adds two numbers."}]
GREEDY = SamplingParams(0.0)


def _load(path):
    from verispec.backends import load_backend

    # one thread: a busy neighbour can stall llama.cpp's spinning pool on a 2-core machine
    return load_backend("llamacpp", path, n_ctx=512, n_threads=1)


@pytest.fixture(scope="module")
def pair(smollm2_path):
    target, draft = _load(smollm2_path), _load(smollm2_path)
    yield target, draft
    target.close()
    draft.close()


@pytest.fixture(scope="module")
def prompt_and_greedy(pair):
    """The chat prompt and the target's own greedy continuation (plain score/commit steps)."""
    target, _ = pair
    prompt = target.tokenizer.apply_chat_template(MESSAGES)
    target.reset(prompt)
    out = []
    for _ in range(20):
        out.append(int(target.score()[0].argmax()))
        target.commit([], out[-1])
    return prompt, out


def _req(tokens, kind):
    return DraftRequest(list(tokens), NoiseSource(0).step(0, 0), GREEDY, 1, kind)


def _accept(tree, tau: int, y: int) -> VerifyResult:
    path = torch.full((1, tree.gamma), -1, dtype=torch.int64)
    path[0, :tau] = tree.paths[0, 0, :tau]
    return VerifyResult(path, torch.tensor([tau]), torch.tensor([y]), torch.tensor([tau == tree.gamma]))


@pytest.mark.parametrize("kind", ["onehot", "iid"])
def test_greedy_drafts_equal_the_targets_continuation(pair, prompt_and_greedy, kind):
    target, draft = pair
    prompt, greedy = prompt_and_greedy
    drafter = ModelDrafter(draft, target=target)  # same GGUF: the vocabulary check passes
    ctx, done = list(prompt), 0
    for tau in (3, 6, 0):  # reject after 3, accept all 6 (+ bonus), reject the first
        req = _req(ctx, kind)
        tree = drafter.propose(req, 6)
        assert tree.tokens[0].tolist() == greedy[done:done + 6]
        y = greedy[done + tau]  # the verifier's next token: the target's greedy token
        drafter.observe(req, tree, _accept(tree, tau, y))
        ctx += greedy[done:done + tau + 1]
        done += tau + 1
        assert draft.n_past == len(ctx) and draft.pending == ctx[-1]


def test_tree_first_draft_is_the_greedy_continuation(pair, prompt_and_greedy):
    target, draft = pair
    prompt, greedy = prompt_and_greedy
    drafter = ModelDrafter(draft)
    req = DraftRequest(list(prompt), NoiseSource(0).step(0, 0), GREEDY, 3, "onehot")
    tree = drafter.propose(req, 4)  # top-3 first tokens, each continued greedily
    first = [int(tree.tokens[0, n]) for n in tree.paths[0, 0].tolist()]
    assert first == greedy[:4] and tree.k == 3 and len(set(tree.tokens[0, tree.paths[0, :, 0]].tolist())) == 3
    assert draft.n_past == len(prompt)  # the tree was only scored; the committed state is the context
    drafter.observe(req, tree, _accept(tree, 2, greedy[2]))
    req = DraftRequest(prompt + greedy[:3], NoiseSource(0).step(0, 3), GREEDY, 1, "onehot")
    assert drafter.propose(req, 4).tokens[0].tolist() == greedy[3:7]
