"""Fixtures: a two-category JSONL of prompts the tiny word-level tokenizer knows (the tiny models and
the SmolLM2 GGUF come from tests/conftest.py)."""
from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="session")
def tiny_prompts(tmp_path_factory) -> str:
    """Two prompts in two categories, in Spec-Bench's format."""
    path = tmp_path_factory.mktemp("prompts") / "p.jsonl"
    rows = [{"question_id": 1, "category": "alpha", "turns": ["hello world w10 w11 w12"]},
            {"question_id": 2, "category": "beta", "turns": ["w20 w21 hello w22"]}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)
