"""A head that also reads middle layers of the target (EAGLE-3's fused features): what the backend records
equals what training computes, a head widened with `with_taps` starts where it was, and drafting with one
stays lossless."""
from __future__ import annotations

import random

import pytest
import torch

from verispec.draft.head import HeadDrafter
from verispec.draft.head_data import features
from verispec.draft.head_model import DraftHead, with_taps
from verispec.engine import Controller, CostCurve, Engine
from verispec.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0.0)
H = 64  # the tiny Llama's hidden size (2 layers)


@pytest.mark.parametrize("lean", [True, False])
def test_recorded_taps_equal_the_training_features(tiny_llama_dir, lean):
    """Rows kept across prefill, a tree commit and plain steps are [f | rms(h_1)], the rows `head_data.features`
    gives training for the same text; `score(return_hidden=True)` still returns f alone."""
    from transformers import AutoModelForCausalLM

    from verispec.backends.torch_hf import TorchBackend

    be = TorchBackend(tiny_llama_dir, lean=lean, dtype=torch.float32)
    be.record_features(taps=(1,))
    rng = random.Random(1)
    ctx = [rng.randrange(3, 128) for _ in range(9)]
    be.reset(ctx)
    toks = [rng.randrange(3, 128) for _ in range(3)]
    be.score(toks, [-1, 0, -1])
    be.commit([2], 9)
    ctx += [toks[2], 9]
    logits, hidden = be.score(return_hidden=True)
    assert hidden.shape == (1, H)
    be.commit([], int(logits[0].argmax()))
    ctx.append(int(logits[0].argmax()))
    got = be.features(0, len(ctx) - 1)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    with torch.no_grad():
        want = features(model, [(ctx, 0)], dtype=torch.float32, taps=(1,))[0][:-1]
        plain = features(model, [(ctx, 0)], dtype=torch.float32)[0][:-1]
    assert got.shape == (len(ctx) - 1, 2 * H)
    assert torch.allclose(got, want, atol=1e-4)
    assert torch.allclose(got[:, :H], plain, atol=1e-4)  # f first, as without taps
    assert torch.allclose(got[:, H:].pow(2).mean(-1), torch.ones(len(ctx) - 1), atol=1e-3)  # unit RMS
    assert not torch.allclose(got[:, H:], plain, atol=0.1)  # control: the tap is not f again


def test_taps_must_name_inner_layers(tiny_llama_dir):
    from verispec.backends.torch_hf import TorchBackend

    be = TorchBackend(tiny_llama_dir)
    for bad in [(0,), (2,), (1, 5)]:
        with pytest.raises(ValueError, match="layers 1 .. 1"):
            be.record_features(taps=bad)


def test_a_widened_head_starts_where_it_was_and_reads_its_taps_once_trained():
    """`with_taps` adds `mix` at zero: the same predictions from [f | taps] as the original from f; a trained
    (non-zero) mix changes them; chain rows (width H) and wrong widths."""
    torch.manual_seed(0)
    head = DraftHead(32, 4, 48, torch.arange(0, 50, 2)).to(torch.float64)
    head.attach(torch.randn(50, 32, dtype=torch.float64), torch.randn(50, 32, dtype=torch.float64))
    wide = with_taps(head, (3, 1)).attach(head.embed, torch.randn(50, 32, dtype=torch.float64))
    assert wide.taps == (1, 3) and with_taps(wide, (1, 3)) is wide and with_taps(wide, ()) is wide
    tok, f = torch.randint(0, 50, (5,)), torch.randn(5, 32, dtype=torch.float64)
    taps = torch.randn(5, 64, dtype=torch.float64)
    assert torch.equal(wide.inputs(tok, torch.cat((f, taps), -1)), head.inputs(tok, f))
    assert torch.equal(wide.inputs(tok, f), head.inputs(tok, f))  # a chain row: the head's own f̂
    torch.nn.init.normal_(wide.mix.weight, std=0.1)
    assert not torch.allclose(wide.inputs(tok, torch.cat((f, taps), -1)), head.inputs(tok, f))
    with pytest.raises(ValueError, match="width 32 or 96, got 64"):
        wide.inputs(tok, taps)
    with pytest.raises(ValueError, match="width 32, got 96"):
        head.inputs(tok, torch.cat((f, taps), -1))
    with pytest.raises(ValueError, match="cannot switch"):
        with_taps(wide, (2,))


def _engine(backend, drafter):
    return Engine(backend, drafter, "auto", controller=Controller(CostCurve([1.0] * 12, 1.0), fixed_gamma=3))


@pytest.fixture(scope="module")
def tiny_head(tiny_llama_dir, fit_tiny_head):
    return fit_tiny_head(tiny_llama_dir)


def test_a_head_with_taps_keeps_greedy_output(tiny_llama_dir, tiny_head):
    """Drafting from [f | rms(h_1)] rows (a non-zero mix): token for token what plain decoding gives."""
    from verispec.backends.torch_hf import TorchBackend

    be = TorchBackend(tiny_llama_dir)
    ref = Engine(be, None).generate("hello world w20", GREEDY, 24, chat=False)
    head = with_taps(tiny_head, (1,))
    torch.manual_seed(0)
    torch.nn.init.normal_(head.mix.weight, std=0.02)
    got = _engine(be, HeadDrafter(be, head, confidence=None, tree=None)).generate("hello world w20", GREEDY, 24,
                                                                                  chat=False)
    assert got.tokens == ref.tokens and got.stats.drafts > 0
    assert be.features(0, 2).shape == (2, 2 * H)


def test_heads_with_and_without_taps_share_one_target(tiny_llama_dir, tiny_head):
    """The target keeps the union of the taps its heads ask for; each head reads its own columns, so both keep
    greedy output, and the head without taps drafts what it drafts alone."""
    from verispec.backends.torch_hf import TorchBackend

    be = TorchBackend(tiny_llama_dir)
    ref = Engine(be, None).generate("hello world w20", GREEDY, 24, chat=False)
    alone = _engine(be, HeadDrafter(be, tiny_head, confidence=None, tree=None)).generate(
        "hello world w20", GREEDY, 24, chat=False)
    plain_head = HeadDrafter(be, tiny_head, confidence=None, tree=None)
    wide = with_taps(tiny_head, (1,))
    torch.nn.init.normal_(wide.mix.weight, std=0.02)
    tap_head = HeadDrafter(be, wide, confidence=None, tree=None)
    assert be.feature_taps == (1,)
    shared = _engine(be, plain_head).generate("hello world w20", GREEDY, 24, chat=False)
    assert be.features(0, 2).shape == (2, 2 * H)
    assert shared.tokens == ref.tokens and shared.stats.accepted == alone.stats.accepted
    assert _engine(be, tap_head).generate("hello world w20", GREEDY, 24, chat=False).tokens == ref.tokens
