"""Drafting with the head's weights quantized, as int8 rows or 4-bit groups, or float and packed
(`head_model.drafting_copy`, `HeadDrafter(quant=...)`): close to the float head, lossless like any q, and never
trained or saved by mistake."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from verispec.draft.head import HeadDrafter
from verispec.backends.torch_llama import cpu_bf16
from verispec.draft.head_model import (FloatLinear, HeadCache, Int4Linear, Int8Linear, drafting_copy, quantize_linear,
                                     save_head, with_taps)
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int4_linear_is_the_linear_up_to_rounding_its_groups(dtype):
    """Each group of 32 weights in a row is rounded to 1/15 of its own range: the error of an output is at most
    half a step per weight, summed over the groups; a coarser rounding breaks the bound."""
    torch.manual_seed(0)
    w = torch.randn(64, 96) * torch.logspace(-2, 1, 64)[:, None]
    b = torch.randn(64)
    lin = Int4Linear(w, dtype, b)
    x = torch.randn(2, 3, 96, dtype=dtype)
    ref = F.linear(x.double(), w.double(), b.double())  # [2, 3, 64]
    y = lin(x)
    assert y.shape == (2, 3, 64) and y.dtype == dtype
    g = w.double().view(64, 3, 32)
    half_step = (g.amax(-1) - g.amin(-1)) / 30  # [64, 3]
    bound = (x.double().abs().view(2, 3, 1, 3, 32).sum(-1) * half_step).sum(-1)  # [2, 3, 64]
    slack = 0.02 * ref.abs() + 0.01 * bound if dtype == torch.bfloat16 else 1e-4 * (ref.abs() + bound)
    assert bool(((y.double() - ref).abs() <= bound + slack + 1e-6).all())
    off = (g + 1.5 * half_step[..., None]).view(64, 96)  # every weight off by 1.5 half-steps, one way
    xa = x.double().abs()  # so that the errors add up: 1.5 times the bound
    control = F.linear(xa, off, b.double()) - F.linear(xa, w.double(), b.double())
    assert not bool((control.abs() <= bound + slack + 1e-6).all())  # the bound can fail


def test_int4_only_where_the_kernel_takes_the_shape():
    assert isinstance(quantize_linear(torch.randn(64, 96), torch.float32, None, 4), Int4Linear)
    assert isinstance(quantize_linear(torch.randn(70, 96), torch.float32, None, 4), Int8Linear)  # 70 rows: not x16
    assert isinstance(quantize_linear(torch.randn(64, 48), torch.float32, None, 4), Int8Linear)  # 48 columns: not x32
    assert isinstance(quantize_linear(torch.randn(64, 96), torch.float32, None, 8), Int8Linear)
    with pytest.raises(ValueError, match="multiples of 16"):
        Int4Linear(torch.randn(70, 96), torch.float32)


@pytest.mark.parametrize("bits", [8, 4, 0])
def test_a_drafting_copy_predicts_what_its_float_head_does(tiny_backend, tiny_head, bits):
    """Rows through the cache: the quantized copy's logits stay within rounding of the head's, the top token
    agrees, and the head it was made from is left as it was; the float copy (packed weights) is the head up to
    float32 rounding."""
    model = tiny_backend.model
    embed, lm_head = model.get_input_embeddings().weight.float(), model.get_output_embeddings().weight.float()
    head = tiny_head.float().attach(embed, lm_head)
    before = {k: v.clone() for k, v in head.state_dict().items()}
    q = drafting_copy(head, bits).attach(embed, lm_head)
    kind = {4: Int4Linear, 8: Int8Linear, 0: FloatLinear}[bits]
    assert q.quant == bits and q.drafting and not head.drafting and isinstance(q.lm_head, kind)
    assert any(isinstance(m, kind) for m in q.children())
    assert all(torch.equal(before[k], v) for k, v in head.state_dict().items())
    torch.manual_seed(1)
    tokens = torch.randint(0, head.embed.shape[0], (12,))
    feats = torch.randn(12, head.fc.out_features)
    outs = [HeadCache(h).step(tokens, feats, torch.arange(12)) for h in (head, q)]  # [12, H] each
    za, zb = head.logits(outs[0]), q.logits(outs[1])  # [12, Vd]
    tol = {8: 0.05, 4: 0.25, 0: 1e-5}[bits]
    assert float((za - zb).abs().max()) < tol * float(za.abs().max())
    assert float((za.argmax(-1) == zb.argmax(-1)).float().mean()) >= {8: 0.9, 4: 0.75, 0: 1.0}[bits]


@pytest.mark.parametrize("bits", [4, 0])
def test_a_drafting_copy_is_not_saved_widened_or_run_where_torch_has_no_kernel(tmp_path, tiny_backend, tiny_head,
                                                                                bits):
    q = drafting_copy(tiny_head.float(), bits)
    with pytest.raises(ValueError, match="a drafting copy of a head is for drafting"):
        save_head(q, str(tmp_path / "q.pt"))
    with pytest.raises(ValueError, match="a drafting copy of a head is for drafting"):
        with_taps(q, (1,))
    with pytest.raises(ValueError, match="int8 drafting needs a CPU target in float32"):
        HeadDrafter(tiny_backend, tiny_head, dtype=torch.float64, quant="int8")
    with pytest.raises(ValueError, match="quant must be one of"):
        HeadDrafter(tiny_backend, tiny_head, quant="int2")
    with pytest.raises(ValueError, match="bits must be 0, 4 or 8"):
        drafting_copy(tiny_head.float(), 2)
    # the default on a CPU target: 4-bit where the CPU computes bfloat16 natively, float and packed elsewhere
    assert HeadDrafter(tiny_backend, tiny_head).head.quant == (4 if cpu_bf16() else 0)
    assert not HeadDrafter(tiny_backend, tiny_head, dtype=torch.float64).head.quant  # no kernel: float


@pytest.mark.parametrize("quant, bits", [("int4", 4), ("int8", 8), ("none", 0)])
def test_greedy_output_is_plain_decoding_however_the_head_is_stored(tiny_backend, tiny_head, quant, bits):
    ref = Engine(tiny_backend, None).generate("hello world w20", GREEDY, 24, chat=False)
    drafter = HeadDrafter(tiny_backend, tiny_head, confidence=None, tree=None, quant=quant)
    assert drafter.head.quant == bits
    eng = Engine(tiny_backend, drafter, "auto", controller=Controller(CostCurve([1.0] * 12, 1.0), fixed_gamma=3))
    got = eng.generate("hello world w20", GREEDY, 24, chat=False)
    assert got.tokens == ref.tokens and got.stats.accepted > 0


@pytest.mark.parametrize("flag, bits", [([], 4 if cpu_bf16() else 0), (["--head-quant", "int8"], 8),
                                        (["--head-quant", "none"], 0)])
def test_the_quant_flag_reaches_the_drafter(tmp_path, tiny_llama_dir, tiny_head, flag, bits):
    """`verispec generate` and `verispec bench` read --head-quant alike, and the engine passes it on."""
    from verispec.bench.command import build_parser as bench_parser
    from verispec.cli import build_parser
    from verispec.cli_args import head_config
    from verispec.engine.build import EngineConfig, build_engine

    path = str(tmp_path / "h.pt")
    save_head(tiny_head, path, dtype=torch.float32)
    gen = head_config(build_parser().parse_args(["generate", "hi", "--draft-head", path] + flag))
    bench = head_config(bench_parser().parse_args(["--draft-head", path] + flag))
    assert gen == bench == {"draft_head": path, **({"head_quant": flag[1]} if flag else {})}
    eng = build_engine(EngineConfig(backend="torch", model=tiny_llama_dir, drafter="head", **gen))
    assert eng.drafter.head.quant == bits
