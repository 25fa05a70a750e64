"""llama.cpp builds with AMX int8 kernels load models without the extra (repacking) buffers: those kernels die of
SIGILL at a quantized model's first batch in the bundled llama.cpp (`llamacpp_api.amx_build`)."""
from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp")

from verispec.backends import llamacpp_api as api  # noqa: E402


@pytest.mark.parametrize("info, amx", [(b"CPU : AVX2 = 1 | AMX_INT8 = 1 | REPACK = 1 |", True),
                                       (b"CPU : AVX2 = 1 | AVX512_BF16 = 1 | REPACK = 1 |", False),
                                       ("CPU : AMX_INT8 = 1 |", True)])
def test_amx_build_reads_system_info(monkeypatch, info, amx):
    monkeypatch.setattr(api.L, "llama_print_system_info", lambda: info)
    assert api.amx_build() is amx


@pytest.mark.parametrize("amx", [True, False])
def test_model_params_drop_extra_buffers_on_amx_builds(monkeypatch, amx):
    """The loader gets use_extra_bufts False on an AMX build and llama.cpp's default (True) otherwise: the
    control, which a handle that always dropped them would fail."""
    seen = {}

    def load(path, params):
        seen["extra"] = bool(params.use_extra_bufts)
        return None  # "could not load": the handle raises after the call

    monkeypatch.setattr(api, "amx_build", lambda: amx)
    monkeypatch.setattr(api.L, "llama_model_load_from_file", load)
    with pytest.raises(ValueError, match="could not load"):
        api.ModelHandle("any.gguf")
    assert seen["extra"] is (not amx)
