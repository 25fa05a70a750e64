"""EarlyExitDrafter: drafting with the target's first L layers (torch backend)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from verispec.draft import DraftRequest, EarlyExitDrafter  # noqa: E402
from verispec.noise import NoiseSource  # noqa: E402
from verispec.sampling import SamplingParams, probs_from_logits  # noqa: E402
from verispec.tree import VerifyResult  # noqa: E402

PROMPT = [1, 17, 42, 99, 5, 63, 8, 120, 33]
GREEDY = SamplingParams(0.0)


@pytest.fixture(scope="module")
def shallow_model(tiny_llama_dir):
    """An independent reference: the checkpoint loaded as a 1-layer model (layer 1's weights unused)."""
    return transformers.AutoModelForCausalLM.from_pretrained(tiny_llama_dir, num_hidden_layers=1).eval()


def _greedy(model, context: list[int], steps: int) -> tuple[list[int], torch.Tensor]:
    """Greedy tokens by full recomputation (no cache) and the logits of the first step [V]."""
    ctx, out, first = list(context), [], None
    with torch.inference_mode():
        for _ in range(steps):
            logits = model(input_ids=torch.tensor([ctx])).logits[0, -1]
            first = logits if first is None else first
            out.append(int(logits.argmax()))
            ctx.append(out[-1])
    return out, first


def _req(tokens, params=GREEDY, kind="onehot"):
    return DraftRequest(list(tokens), NoiseSource(0).step(0, 0), params, 1, kind)


def test_drafts_are_the_truncated_models_greedy_tokens(tiny_backend, shallow_model):
    drafter = EarlyExitDrafter(tiny_backend, layers=1)
    want, logits = _greedy(shallow_model, PROMPT, 6)
    tree = drafter.propose(_req(PROMPT), 6)
    assert tree.tokens[0].tolist() == want
    params = SamplingParams(0.8)
    q = drafter.propose(_req(PROMPT, params, "iid"), 2).q[0, 0]  # the soft law of the first step
    torch.testing.assert_close(q, probs_from_logits(logits, params), atol=1e-5, rtol=0)
    # after a verdict (2 of 6 accepted, then token 5) the draft cache is rolled back, not rebuilt
    tree = drafter.propose(_req(PROMPT), 6)
    path = torch.tensor([[0, 1, -1, -1, -1, -1]])
    drafter.observe(_req(PROMPT), tree, VerifyResult(path, torch.tensor([2]), torch.tensor([5]),
                                                     torch.tensor([False])))
    ctx = PROMPT + want[:2] + [5]
    assert drafter.propose(_req(ctx), 4).tokens[0].tolist() == _greedy(shallow_model, ctx, 4)[0]


def test_shares_weights_and_leaves_the_target_alone(tiny_backend):
    tiny_backend.reset(PROMPT)
    before = tiny_backend.score(torch.tensor([4, 5]), torch.tensor([-1, 0]))
    drafter = EarlyExitDrafter(tiny_backend, layers=1)
    drafter.propose(_req(PROMPT[:5]), 3)
    head = drafter.backend.model.get_output_embeddings().weight
    assert head.data_ptr() == tiny_backend.model.get_output_embeddings().weight.data_ptr()
    assert len(tiny_backend.model.model.layers) == 2 and tiny_backend.model.config.num_hidden_layers == 2
    tiny_backend.reset(PROMPT)
    assert torch.equal(tiny_backend.score(torch.tensor([4, 5]), torch.tensor([-1, 0])), before)


def test_all_layers_is_the_target(tiny_backend):
    tiny_backend.reset(PROMPT)
    want = []
    for _ in range(4):  # the target's own greedy continuation
        want.append(int(tiny_backend.score()[0].argmax()))
        tiny_backend.commit([], want[-1])
    assert EarlyExitDrafter(tiny_backend, layers=2).propose(_req(PROMPT), 4).tokens[0].tolist() == want


def test_bad_arguments(tiny_backend):
    for layers in (0, 3, -1, True, 1.0):
        with pytest.raises(ValueError, match="layers"):
            EarlyExitDrafter(tiny_backend, layers=layers)
    with pytest.raises(ValueError, match="torch"):
        EarlyExitDrafter(object(), layers=1)
