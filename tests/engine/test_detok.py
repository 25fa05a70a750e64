"""`IncrementalText`: the text of a growing token list equals decoding it whole, at every step.

Token lists from the embedded model's tokenizer (byte-level BPE, llama.cpp's detokenizer): real text with
multi-byte characters, and random ids, whose byte tokens split characters across tokens in every way. A control
that decodes only the new tokens and appends fails the same check.
"""
from __future__ import annotations

import random

import pytest

from verispec.engine.detok import IncrementalText

TEXT = ("Speculative decoding — «lossless» 推测解码 🚀🧪 naïve café. Ελληνικά, русский, 日本語のテキスト! "
        "Tabs\tand\nnew lines, emoji 👩‍🔬 and math ∑ x² ≤ ∞.")


@pytest.fixture(scope="module")
def tok(smollm2_path):
    from verispec.backends.llamacpp_api import ModelHandle
    from verispec.backends.llamacpp_tokenizer import LlamaCppTokenizer

    return LlamaCppTokenizer(ModelHandle(smollm2_path))


def _lists(tok, seed: int):
    rng = random.Random(seed)
    real = tok.encode(TEXT * 3)
    byte_rich = [rng.randrange(tok.n_vocab) if rng.random() < 0.5 else rng.randrange(256) for _ in range(300)]
    special = [rng.choice([tok.eos_id, tok.bos_id]) if rng.random() < 0.05 else t for t in real]
    return [real, byte_rich, special]


def _check(text_of, tok, ids, rng) -> int:
    """Grow `ids` by 1-9 tokens a step (a speculative step's sizes); the number of steps whose text was wrong."""
    wrong, n = 0, 0
    while n < len(ids):
        n = min(len(ids), n + rng.randint(1, 9))
        wrong += text_of(ids[:n]) != tok.decode(ids[:n], skip_special=True)
    return wrong


@pytest.mark.parametrize("window", [1, 8])
def test_incremental_text_equals_the_whole_decode(tok, window):
    for seed in range(3):
        for ids in _lists(tok, seed):
            inc = IncrementalText(lambda x: tok.decode(x, skip_special=True), window)
            assert _check(inc.text, tok, ids, random.Random(seed)) == 0
            assert inc._anchor > len(ids) // 2  # it did move: the window, not the whole list, was decoded
        assert inc.full_decodes <= 2


def test_appending_the_new_tokens_alone_is_caught(tok):
    class Naive:  # the control: the new tokens decoded on their own and appended
        def __init__(self):
            self.n, self.s = 0, ""

        def text(self, ids):
            self.s += tok.decode(ids[self.n:], skip_special=True)
            self.n = len(ids)
            return self.s

    rng = random.Random(0)
    assert sum(_check(Naive().text, tok, ids, rng) for ids in _lists(tok, 0)) > 0


def test_a_shrinking_list_is_refused():
    inc = IncrementalText(lambda ids: "".join(chr(97 + i % 26) for i in ids), window=2)
    assert inc.text(list(range(10))) == "abcdefghij"
    with pytest.raises(ValueError, match="shrank"):
        inc.text([0, 1])
    with pytest.raises(ValueError, match="window"):
        IncrementalText(str, window=0)
