"""Fixtures: the tiny random-init Llamas of tests/engine (target and draft, same tokenizer), the
embedded SmolLM2 GGUF, and a two-category JSONL of prompts the tiny word-level tokenizer knows."""
from __future__ import annotations

import importlib.util
import json
import pathlib

import pytest

_spec = importlib.util.spec_from_file_location(
    "_engine_fixtures", pathlib.Path(__file__).parents[1] / "engine" / "conftest.py")
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)

tiny_llama_dir = _fixtures.tiny_llama_dir
tiny_draft_dir = _fixtures.tiny_draft_dir
smollm2_path = _fixtures.smollm2_path


@pytest.fixture(scope="session")
def tiny_prompts(tmp_path_factory) -> str:
    """Two prompts in two categories, in Spec-Bench's format."""
    path = tmp_path_factory.mktemp("prompts") / "p.jsonl"
    rows = [{"question_id": 1, "category": "alpha", "turns": ["hello world w10 w11 w12"]},
            {"question_id": 2, "category": "beta", "turns": ["w20 w21 hello w22"]}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)
