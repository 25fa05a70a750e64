"""The llama.cpp backend's attention path: flash attention or not, whichever is cheaper here, measured once and
cached (`llamacpp_attn`)."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("llama_cpp")

from verispec.backends import llamacpp_attn as attn  # noqa: E402


@pytest.mark.parametrize("times, want", [({True: 1.0, False: 2.0}, True), ({True: 2.0, False: 1.0}, False)])
def test_the_choice_follows_the_times_and_is_measured_once(tmp_path, monkeypatch, times, want):
    monkeypatch.setenv("VERISPEC_CACHE", str(tmp_path))
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF model bytes")
    monkeypatch.setattr(attn, "measure", lambda *a: times)
    assert attn.flash_attn_choice(None, str(model), 2) is want

    def again(*a):
        raise AssertionError("measured twice")

    monkeypatch.setattr(attn, "measure", again)
    assert attn.flash_attn_choice(None, str(model), 2) is want  # from the cache folder
    (saved,) = tmp_path.glob("attn-*.json")
    assert json.loads(saved.read_text())["flash_attn"] is want
    with pytest.raises(AssertionError, match="twice"):  # another thread count is another measurement
        attn.flash_attn_choice(None, str(model), 1)


def test_measure_times_both_paths(smollm2_path):
    from verispec.backends.llamacpp_api import ModelHandle

    model = ModelHandle(smollm2_path)  # held: the model is freed with its handle
    times = attn.measure(model.ptr, n_threads=1, reps=2)
    assert set(times) == {True, False} and all(t > 0 for t in times.values())
