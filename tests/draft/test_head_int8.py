"""Drafting with the head's weights as int8 rows (`head_model.quantized`, `HeadDrafter(int8=...)`): close to
the float head, lossless like any q, and never trained or saved by mistake."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from verispec.draft.head import HeadDrafter
from verispec.draft.head_model import HeadCache, Int8Linear, quantized, save_head, with_taps
from verispec.engine import Controller, CostCurve, Engine
from verispec.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(scope="module")
def tiny_head(tiny_llama_dir, fit_tiny_head):
    return fit_tiny_head(tiny_llama_dir)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [False, True])
def test_int8_linear_is_the_linear_up_to_rounding_its_rows(dtype, bias):
    torch.manual_seed(0)
    w = torch.randn(70, 48) * torch.logspace(-2, 1, 70)[:, None]  # rows of very different scales
    b = torch.randn(70) if bias else None
    lin = Int8Linear(w, dtype, b)
    x = torch.randn(2, 3, 48, dtype=dtype)
    ref = F.linear(x.double(), w.double(), None if b is None else b.double())  # [2, 3, 70]
    y = lin(x)
    assert y.shape == (2, 3, 70) and y.dtype == dtype and lin.weight.dtype == torch.int8
    # each row is rounded to 1/254 of its own largest weight: the error is relative to the row's scale
    row_scale = (x.double().abs().sum(-1, keepdim=True) * w.double().abs().amax(1)) / 254  # [2, 3, 70]
    slack = 0.02 * ref.abs() if dtype == torch.bfloat16 else 1e-5 * ref.abs()
    assert bool(((y.double() - ref).abs() <= row_scale + slack + 1e-6).all())
    control = F.linear(x.double(), w.double().round(decimals=1), None if b is None else b.double())
    assert not bool(((control - ref).abs() <= row_scale + slack + 1e-6).all())  # the bound can fail


def test_a_quantized_head_predicts_what_its_float_head_does(tiny_backend, tiny_head):
    """Rows through the cache: the int8 copy's logits stay within rounding of the head's, the top token
    agrees, and the head it was made from is left as it was."""
    model = tiny_backend.model
    embed, lm_head = model.get_input_embeddings().weight.float(), model.get_output_embeddings().weight.float()
    head = tiny_head.float().attach(embed, lm_head)
    before = {k: v.clone() for k, v in head.state_dict().items()}
    q = quantized(head).attach(embed, lm_head)
    assert q.int8 and not head.int8 and isinstance(q.qkv, Int8Linear) and isinstance(q.lm_head, Int8Linear)
    assert all(torch.equal(before[k], v) for k, v in head.state_dict().items())
    torch.manual_seed(1)
    tokens = torch.randint(0, head.embed.shape[0], (12,))
    feats = torch.randn(12, head.fc.out_features)
    outs = [HeadCache(h).step(tokens, feats, torch.arange(12)) for h in (head, q)]  # [12, H] each
    za, zb = head.logits(outs[0]), q.logits(outs[1])  # [12, Vd]
    assert float((za - zb).abs().max()) < 0.05 * float(za.abs().max())
    assert float((za.argmax(-1) == zb.argmax(-1)).float().mean()) >= 0.9


def test_an_int8_head_is_not_saved_widened_or_run_where_torch_has_no_kernel(tmp_path, tiny_backend, tiny_head):
    q = quantized(tiny_head.float())
    with pytest.raises(ValueError, match="int8 head is for drafting"):
        save_head(q, str(tmp_path / "q.pt"))
    with pytest.raises(ValueError, match="int8 head is for drafting"):
        with_taps(q, (1,))
    with pytest.raises(ValueError, match="int8 drafting needs a CPU target in float32"):
        HeadDrafter(tiny_backend, tiny_head, dtype=torch.float64, int8=True)
    assert HeadDrafter(tiny_backend, tiny_head).head.int8  # the default on a CPU target
    assert not HeadDrafter(tiny_backend, tiny_head, dtype=torch.float64).head.int8  # no kernel: float


@pytest.mark.parametrize("int8", [True, False])
def test_greedy_output_is_plain_decoding_with_and_without_int8(tiny_backend, tiny_head, int8):
    ref = Engine(tiny_backend, None).generate("hello world w20", GREEDY, 24, chat=False)
    drafter = HeadDrafter(tiny_backend, tiny_head, confidence=None, tree=None, int8=int8)
    assert drafter.head.int8 == int8
    eng = Engine(tiny_backend, drafter, "auto", controller=Controller(CostCurve([1.0] * 12, 1.0), fixed_gamma=3))
    got = eng.generate("hello world w20", GREEDY, 24, chat=False)
    assert got.tokens == ref.tokens and got.stats.accepted > 0


@pytest.mark.parametrize("flag, int8", [([], True), (["--head-int8"], True), (["--no-head-int8"], False)])
def test_the_int8_flags_reach_the_drafter(tmp_path, tiny_llama_dir, tiny_head, flag, int8):
    """`verispec generate` and `verispec bench` read --head-int8 / --no-head-int8 alike, and the engine passes it on."""
    from verispec.bench.command import build_parser as bench_parser
    from verispec.cli import build_parser
    from verispec.cli_args import head_config
    from verispec.engine.build import EngineConfig, build_engine

    path = str(tmp_path / "h.pt")
    save_head(tiny_head, path, dtype=torch.float32)
    gen = head_config(build_parser().parse_args(["generate", "hi", "--draft-head", path] + flag))
    bench = head_config(bench_parser().parse_args(["--draft-head", path] + flag))
    assert gen == bench == {"draft_head": path, **({"head_int8": int8} if flag else {})}
    eng = build_engine(EngineConfig(backend="torch", model=tiny_llama_dir, drafter="head", **gen))
    assert eng.drafter.head.int8 == int8
