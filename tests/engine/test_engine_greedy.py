"""Greedy equality: at temperature 0 every verifier, with every drafter, reproduces plain greedy
decoding token for token (ALGORITHMS.md §10.6)."""
import pytest

from verispec.backends import load_backend
from verispec.draft.early_exit import EarlyExitDrafter
from verispec.draft.hybrid import LookupThenModel
from verispec.draft.model import ModelDrafter
from verispec.draft.ngram import NGramDrafter
from verispec.engine import Engine
from verispec.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0)
PROMPTS = ["hello world w10 w11 w12 hello world w10 w11", "w40 w41 w42 w43 w40 w41 w42", "user hello"]


@pytest.fixture(scope="module")
def target(tiny_llama_dir):
    return load_backend("torch", tiny_llama_dir)


@pytest.fixture(scope="module")
def plain_outputs(target):
    eng = Engine(target)
    return [eng.generate(p, GREEDY, 24, chat=False).tokens for p in PROMPTS]


@pytest.mark.parametrize("verifier", ["greedy", "token", "block", "specinfer", "gumbel", "gls", "auto"])
def test_ngram_drafter(target, plain_outputs, verifier):
    eng = Engine(target, NGramDrafter(), verifier, k=2 if verifier in ("specinfer", "gls") else 1)
    for prompt, ref in zip(PROMPTS, plain_outputs):
        assert eng.generate(prompt, GREEDY, 24, chat=False).tokens == ref


@pytest.mark.parametrize("verifier,k", [("greedy", 1), ("token", 1), ("block", 1), ("specinfer", 3), ("spectr", 2),
                                        ("specinfer-wor", 2), ("gumbel", 1), ("gls", 3)])
def test_model_drafter(target, tiny_draft_dir, plain_outputs, verifier, k):
    drafter = ModelDrafter(load_backend("torch", tiny_draft_dir))
    eng = Engine(target, drafter, verifier, k=k)
    for prompt, ref in zip(PROMPTS, plain_outputs):
        assert eng.generate(prompt, GREEDY, 24, chat=False).tokens == ref


@pytest.mark.parametrize("verifier", ["greedy", "token", "block", "gumbel"])
def test_lookup_then_model_drafter(target, tiny_draft_dir, plain_outputs, verifier):
    """Prompt lookup on the repeating prompts, the draft model elsewhere: the same text either way."""
    from verispec.engine.controller import Controller, CostCurve

    drafter = LookupThenModel(NGramDrafter(), ModelDrafter(load_backend("torch", tiny_draft_dir)))
    flat = CostCurve([1.0] * 13, 0.01)  # every draft pays: both sources get used
    sources = set()
    eng = Engine(target, drafter, verifier, controller=Controller(flat, max_gamma=12, learn_cost=False))
    observe = drafter.observe
    drafter.observe = lambda req, tree, res: (sources.add(drafter.match_length > 0), observe(req, tree, res))
    for prompt, ref in zip(PROMPTS, plain_outputs):
        assert eng.generate(prompt, GREEDY, 24, chat=False).tokens == ref
    assert sources == {True, False}  # lookup drafted, and so did the model


def test_early_exit_drafter(target, plain_outputs):
    eng = Engine(target, EarlyExitDrafter(target, layers=1), "token")
    for prompt, ref in zip(PROMPTS, plain_outputs):
        assert eng.generate(prompt, GREEDY, 24, chat=False).tokens == ref


def test_embedded_smollm2_greedy(smollm2_path):
    # flash attention on: with it the shipped Q4_1 file scores a row alone and in a batch to the same bits
    # (llama.cpp's other attention path rounds them apart, docs/speed.md §31)
    be = load_backend("llamacpp", smollm2_path, n_threads=1, flash_attn=True)
    prompts = ["Repeat exactly: the cat sat on the mat. the cat sat on the mat.", "What is 2 + 2?"]
    refs = [Engine(be).generate(p, GREEDY, 40).tokens for p in prompts]
    for verifier in ("greedy", "token", "block"):
        eng = Engine(be, NGramDrafter(), verifier)
        for p, ref in zip(prompts, refs):
            got = eng.generate(p, GREEDY, 40)
            assert got.tokens == ref, verifier


def test_a_character_cut_by_max_tokens_stays_out_of_the_text(smollm2_path):
    """The embedded model writes emoji as several byte tokens: stopping inside one leaves no replacement
    character in the text (streamed or returned), while the tokens keep every byte."""
    be = load_backend("llamacpp", smollm2_path, n_threads=1)
    prompt = "Send me three emoji that show happiness."
    full = Engine(be).generate(prompt, GREEDY, 12)
    tok = be.tokenizer
    cuts = [n for n in range(1, 13) if tok.decode(full.tokens[:n], skip_special=True).endswith("\ufffd")]
    assert cuts, "the control: some cut must fall inside a character"
    n = cuts[-1]
    chunks = []
    got = Engine(be, NGramDrafter()).generate(prompt, GREEDY, n, on_text=chunks.append)
    assert got.tokens == full.tokens[:n] and got.stats.finish_reason == "length"
    assert got.text == "".join(chunks) == tok.decode(got.tokens, skip_special=True).rstrip("\ufffd")
    assert "\ufffd" not in got.text and got.text


def test_chat_requests_share_the_template_prefill_and_not_the_rest(smollm2_path):
    """A chat request hands the backend its template's recurring part (SmolLM2: 24 tokens); a raw prompt, or a
    chat with its own system turn, has none; the text does not depend on what ran before."""
    be = load_backend("llamacpp", smollm2_path, n_threads=1)
    eng = Engine(be, NGramDrafter())
    ids = eng.encode("What is 2 + 2?", chat=True)
    assert eng.shared_prefix(ids, chat=True) == 24
    assert eng.shared_prefix(eng.encode("What is 2 + 2?", chat=False), chat=False) == 0
    own = eng.encode([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], chat=True)
    assert eng.shared_prefix(own, chat=True) == 0
    first = eng.generate("What is 2 + 2?", GREEDY, 16).tokens
    eng.generate("Name three rivers.", GREEDY, 8)
    assert eng.generate("What is 2 + 2?", GREEDY, 16).tokens == first and len(be._shared) == 1
