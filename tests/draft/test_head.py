"""The feature-level draft head: the target's recorded features, the drafter's contract and its errors (the
head's cache: test_head_cache.py; laws: tests/engine/test_engine_laws.py)."""
from __future__ import annotations

import random
import re

import pytest
import torch

from verispec.draft.head import HeadDrafter
from verispec.draft.head_model import load_head, save_head
from verispec.draft.value_tree import TreeShape
from verispec.engine import Controller, CostCurve, Engine
from verispec.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0.0)


@pytest.mark.parametrize("lean", [True, False])
def test_recorded_features_equal_a_fresh_prefill(tiny_llama_dir, lean):
    """Features kept across prefill, tree commits and plain steps equal those of one prefill of the result."""
    from verispec.backends.torch_hf import TorchBackend

    be = TorchBackend(tiny_llama_dir, lean=lean)
    be.record_features()
    rng = random.Random(0)
    ctx = [rng.randrange(3, 128) for _ in range(9)]
    be.reset(ctx)
    for step in range(6):
        if step % 2:
            logits = be.score()
            y = int(logits[0].argmax())
            be.commit([], y)
            ctx.append(y)
        else:  # a 2-branch tree; accept the second branch's first node
            toks, parent = [rng.randrange(3, 128) for _ in range(4)], [-1, 0, -1, 2]
            be.score(toks, parent)
            be.commit([2], 7)
            ctx += [toks[2], 7]
    got = be.features(0, be.n_past - 1)
    ref = TorchBackend(tiny_llama_dir, lean=lean)
    ref.record_features()
    ref.reset(ctx)
    assert got.shape == (len(ctx) - 1, 64)
    assert torch.allclose(got, ref.features(0, len(ctx) - 1), atol=1e-4)
    with pytest.raises(ValueError, match="positions with features"):
        be.features(0, be.n_past)  # the pending token has none yet


def test_features_need_recording(tiny_llama_dir):
    from verispec.backends.torch_hf import TorchBackend

    be = TorchBackend(tiny_llama_dir)
    be.reset([1, 5, 6])
    with pytest.raises(ValueError, match="record_features"):
        be.features(0, 1)


@pytest.fixture(scope="module")
def tiny_head(tiny_llama_dir, fit_tiny_head):
    return fit_tiny_head(tiny_llama_dir)


def _engine(backend, drafter, gamma=3):
    return Engine(backend, drafter, "auto", controller=Controller(CostCurve([1.0] * 12, 1.0), fixed_gamma=gamma))


FULL_TREE = TreeShape(nodes=30, topk=3, beam=3, keep=0.0, expand=0.0)  # every node a budget of 4 allows


@pytest.mark.parametrize("tree", [None, TreeShape(), FULL_TREE], ids=["chain", "tree", "full-tree"])
def test_head_drafter_keeps_greedy_output(tiny_backend, tiny_head, tree):
    """Greedy: token for token what plain decoding gives, with drafts accepted along the way, whether the head
    drafts chains or value trees."""
    ref = Engine(tiny_backend, None).generate("hello world w20", GREEDY, 24, chat=False)
    got = _engine(tiny_backend, HeadDrafter(tiny_backend, tiny_head, confidence=None, tree=tree)).generate(
        "hello world w20", GREEDY, 24, chat=False)
    assert got.tokens == ref.tokens
    if tree is not None and tree.keep > 0:
        return  # the tiny head is rarely sure enough for the default shape's threshold: it may draft nothing
    assert got.stats.drafts > 0 and got.stats.accepted > 0
    if tree is FULL_TREE:
        assert got.stats.draft_tokens > 3 * got.stats.drafts  # trees, not chains, were verified


def test_trees_near_the_end_of_the_context_keep_greedy_output(tiny_llama_dir, tiny_head):
    """A tree of more nodes than the context has room for (its depth fits) becomes a plain step: generation runs
    to the end of the context with the output of plain decoding."""
    from verispec.backends import load_backend

    be = load_backend("torch", tiny_llama_dir, n_ctx=40)
    ref = Engine(be, None).generate("hello world w20", GREEDY, 64, chat=False)
    got = _engine(be, HeadDrafter(be, tiny_head, confidence=None, tree=FULL_TREE)).generate(
        "hello world w20", GREEDY, 64, chat=False)
    assert got.tokens == ref.tokens and got.stats.finish_reason == "length" and got.stats.drafts > 0


def _tree_against_chains(backend, head, ctx) -> float:
    """Largest difference between the children's law of each node a value tree expanded and that of a chain
    drafted along the node's path from the same context (the rows a chain computes one by one)."""
    import verispec.draft.head as head_mod
    from verispec.draft.base import DraftRequest
    from verispec.noise import NoiseSource

    drafter = HeadDrafter(backend, head, tree=FULL_TREE, confidence=None)
    backend.reset(ctx)
    drafter.reset()
    drafter.prepare(ctx)
    expanded, real = [], head_mod.grow_tree

    def spy(root, expand, shape, depth, price=None):
        def wrapped(nodes, tok, par, d):
            out = expand(nodes, tok, par, d)
            for j, n in enumerate(nodes):
                path, a = [], n
                while a >= 0:
                    path.append(int(head.vocab[tok[a]]))
                    a = par[a]
                expanded.append((path[::-1], out[j]))
            return out
        return real(root, wrapped, shape, depth, price)

    head_mod.grow_tree = spy
    try:
        tree = drafter.propose(DraftRequest(ctx, NoiseSource(0).step(0, 0), GREEDY, 1, "onehot", any_tree=True), 4)
        assert tree.k > 1
        chain = drafter.propose(DraftRequest(ctx, NoiseSource(0).step(0, 0), GREEDY, 1, "onehot"), 4)
        assert chain.k == 1  # a verifier that takes one draft gets one
    finally:
        head_mod.grow_tree = real
    assert len(expanded) >= 6 and max(len(p) for p, _ in expanded) == 3  # several nodes at every depth
    base, P, worst = drafter.cache.len, len(ctx) - 1, 0.0
    for path, probs in expanded:
        drafter.cache.len, f = base, drafter._last
        for t, x in enumerate(path):
            f = drafter.cache.step(torch.tensor([x]), f[None], torch.tensor([P + 1 + t]))[-1]
        worst = max(worst, float((drafter.head.logits(f).float().softmax(-1) - probs).abs().max()))
    return worst


def test_value_tree_rows_see_the_context_and_their_ancestors(tiny_backend, tiny_head, monkeypatch):
    """Each node a tree expands gets the children's law a chain along its path gets: its row sees the context,
    its ancestors' rows and itself, nothing else. Control: rows blind to their ancestors must differ."""
    import verispec.draft.head as head_mod

    ctx = [1, 5, 6, 7, 9]
    assert _tree_against_chains(tiny_backend, tiny_head, ctx) < 1e-5
    real = head_mod.tree_rows_seen

    def blind(nodes, par, row, base, start):
        return real(nodes, [-1] * len(par), row, base, start)  # as if every node hung from the root
    monkeypatch.setattr(head_mod, "tree_rows_seen", blind)
    assert _tree_against_chains(tiny_backend, tiny_head, ctx) > 1e-3


def test_ngram_then_head_keeps_greedy_output(tiny_backend, tiny_head):
    from verispec.draft.hybrid import LookupThenModel
    from verispec.draft.ngram import NGramDrafter

    prompt = "w20 w21 w22 w20 w21 w22 w20"
    ref = Engine(tiny_backend, None).generate(prompt, GREEDY, 24, chat=False)
    drafter = LookupThenModel(NGramDrafter(min_ngram=1), HeadDrafter(tiny_backend, tiny_head, confidence=None))
    got = _engine(tiny_backend, drafter).generate(prompt, GREEDY, 24, chat=False)
    assert got.tokens == ref.tokens and got.stats.drafts > 0


def test_head_files_round_trip_and_bad_files_fail_clearly(tmp_path, tiny_backend, tiny_head):
    path = str(tmp_path / "h.pt")
    save_head(tiny_head, path, dtype=torch.float32)
    back, _ = load_head(path)
    for name, p in tiny_head.state_dict().items():
        assert torch.equal(p, back.state_dict()[name]), name
    (tmp_path / "bad.pt").write_text("not a head")
    with pytest.raises(ValueError, match="not a verispec draft head"):
        HeadDrafter(tiny_backend, str(tmp_path / "bad.pt"))
    with pytest.raises(ValueError, match="not found"):
        HeadDrafter(tiny_backend, str(tmp_path / "missing.pt"))


def test_a_head_for_another_target_is_refused(tmp_path, tiny_backend, tiny_draft_dir, tiny_head):
    from verispec.backends import load_backend
    from verispec.draft.head import target_probe

    path = str(tmp_path / "h.pt")
    save_head(tiny_head, path, meta=target_probe(tiny_backend.model, "tiny"))
    HeadDrafter(tiny_backend, path)  # its own target: fine
    with pytest.raises(ValueError, match="trained for another target"):
        HeadDrafter(load_backend("torch", tiny_draft_dir), path)


def test_head_drafter_needs_a_torch_target(smollm2_path):
    from verispec.backends import load_backend

    with pytest.raises(ValueError, match="torch backend"):
        HeadDrafter(load_backend("llamacpp", smollm2_path, n_ctx=256))


def test_head_drafter_drafts_one_chain(tiny_backend, tiny_head):
    from verispec.draft.base import DraftRequest
    from verispec.noise import NoiseSource

    drafter = HeadDrafter(tiny_backend, tiny_head)
    tiny_backend.reset([1, 5, 6, 7])
    drafter.reset()
    drafter.prepare([1, 5, 6, 7])
    noise = NoiseSource(0).step(0, 0)
    with pytest.raises(ValueError, match="one chain"):
        drafter.propose(DraftRequest([1, 5, 6, 7], noise, SamplingParams(temperature=1.0), 2, "iid"), 3)
    with pytest.raises(ValueError, match="the target holds"):
        drafter.propose(DraftRequest([1, 5, 6], noise, GREEDY, 1, "onehot"), 3)
    tree = drafter.propose(DraftRequest([1, 5, 6, 7], noise, SamplingParams(temperature=1.0), 1, "iid"), 3)
    q = tree.q[0, :3]  # [gamma, V]: the law of each chain token (rows of pending and nodes 0, 1)
    assert tree.tokens.shape == (1, 3) and torch.allclose(q.sum(-1), torch.ones(3, dtype=q.dtype))
    assert bool((q[:, tiny_head.vocab].sum(-1) > 0.999).all())  # q lives on the draft vocabulary


def test_top_k_tree_holds_the_chain_and_keeps_greedy_output(tiny_backend, tiny_head):
    """k = 3 at temperature 0: the tree's first draft is the k = 1 chain (each branch sees only its own chain
    rows), the first tokens are the head's top 3, and the engine's output is plain greedy decoding's."""
    from verispec.draft.base import DraftRequest
    from verispec.noise import NoiseSource

    drafter = HeadDrafter(tiny_backend, tiny_head, confidence=None, tree=None)
    ctx = [1, 5, 6, 7, 9]
    tiny_backend.reset(ctx)
    drafter.reset()
    drafter.prepare(ctx)
    noise = NoiseSource(0).step(0, 0)
    chain = drafter.propose(DraftRequest(ctx, noise, GREEDY, 1, "onehot"), 4).tokens[0].tolist()
    tree = drafter.propose(DraftRequest(ctx, noise, GREEDY, 3, "onehot"), 4)
    drafts = tree.tokens[0][tree.paths[0]]  # [k, gamma]
    assert drafts[0].tolist() == chain
    assert len(set(drafts[:, 0].tolist())) == 3
    ref = Engine(tiny_backend, None).generate("hello world w20", GREEDY, 24, chat=False)
    eng = Engine(tiny_backend, drafter, "greedy", k=3,
                 controller=Controller(CostCurve([1.0] * 16, 1.0), fixed_gamma=3))
    got = eng.generate("hello world w20", GREEDY, 24, chat=False)
    assert got.tokens == ref.tokens and got.stats.accepted > 0


def test_confidence_cuts_chains_where_the_head_doubts(tiny_backend, tiny_head, monkeypatch):
    """A greedy chain stops where the product of the head's top-1 probabilities falls below `confidence`, and is
    none at all if the first does; what it drafts is the unconstrained chain's prefix; output stays plain greedy's."""
    from verispec.draft.base import DraftRequest
    from verispec.noise import NoiseSource

    ctx = [1, 5, 6, 7, 9]
    req = DraftRequest(ctx, NoiseSource(0).step(0, 0), GREEDY, 1, "onehot")

    def ready(confidence):  # switching recording on starts the target's feature store afresh: reset after
        drafter = HeadDrafter(tiny_backend, tiny_head, confidence=confidence, tree=None)
        tiny_backend.reset(ctx)
        drafter.reset()
        drafter.prepare(ctx)
        return drafter

    free = ready(None)
    probs, logits = [], free.head.logits

    def spy(f):
        z = logits(f)
        probs.append(float(z.float().softmax(-1).max()))
        return z
    monkeypatch.setattr(free.head, "logits", spy)
    full = free.propose(req, 6).tokens[0].tolist()
    monkeypatch.undo()
    sure = torch.tensor(probs).cumprod(0).tolist()
    for cut in (1, 3):
        assert ready((sure[cut - 1] + sure[cut]) / 2).propose(req, 6).tokens[0].tolist() == full[:cut]
    assert ready(min(0.999, probs[0] + 1e-3)).propose(req, 6) is None
    ref = Engine(tiny_backend, None).generate("hello world w20", GREEDY, 24, chat=False)
    got = _engine(tiny_backend, HeadDrafter(tiny_backend, tiny_head, confidence=sure[1] * 0.99, tree=None)).generate(
        "hello world w20", GREEDY, 24, chat=False)
    assert got.tokens == ref.tokens
    with pytest.raises(ValueError, match="confidence"):
        HeadDrafter(tiny_backend, tiny_head, confidence=1.5)
    with pytest.raises(ValueError, match="TreeShape"):
        HeadDrafter(tiny_backend, tiny_head, tree=10)


def test_train_head_command_writes_a_head_its_target_accepts(tmp_path, tiny_llama_dir, tiny_backend, capsys):
    """`verispec train-head` end to end on the tiny Llama: answers (three rounds), data file, training, a loadable
    head; then `--init` trains that head further on the saved data and passage prompts, keeping its vocabulary
    and adding a tap on layer 1, which a further run keeps without naming it."""
    from verispec.cli import main

    out, data, more = str(tmp_path / "tiny.head.pt"), str(tmp_path / "convs.pt"), str(tmp_path / "more.head.pt")
    assert main(["train-head", "--model", tiny_llama_dir, "--out", out, "--prompts", "8", "--max-new-tokens", "6",
                 "--epochs", "1", "--vocab", "64", "--intermediate", "16", "--save-data", data]) == 0
    first, meta = load_head(out)
    n = meta["training"]["conversations"]
    assert 6 <= n <= 8 and len(torch.load(data)) == n  # the third round keeps the requests the target wrote
    HeadDrafter(tiny_backend, out)  # the probe matches its own target
    assert "saved" in capsys.readouterr().out
    assert main(["train-head", "--model", tiny_llama_dir, "--out", more, "--prompts", "0", "--data", data,
                 "--passages", "2", "--max-new-tokens", "4", "--epochs", "1", "--init", out, "--taps", "1"]) == 0
    again, meta = load_head(more)
    assert meta["training"]["continued_from"]["file"] == "tiny.head.pt"
    assert meta["training"]["conversations"] == n + 2  # the saved rounds and two passage prompts
    assert torch.equal(again.vocab, first.vocab) and not torch.equal(again.fc.weight, first.fc.weight)
    assert again.taps == (1,) and again.mix.weight.abs().sum() > 0
    HeadDrafter(tiny_backend, more)  # records the tap it reads
    last = str(tmp_path / "last.head.pt")  # a head with taps trains further without naming them again
    assert main(["train-head", "--model", tiny_llama_dir, "--out", last, "--prompts", "0", "--data", data,
                 "--epochs", "1", "--init", more]) == 0
    assert load_head(last)[0].taps == (1,)


def test_third_round_back_translates_the_second_rounds_translations(monkeypatch):
    """Foreign text comes from the target's answers to 'Translate ... to <language>' prompts, never elsewhere."""
    import random

    from verispec.draft import head_data

    class Tok:
        def decode(self, ids, skip_special_tokens=True):
            return " ".join(f"w{i}" for i in ids)

    def fake_answer(model, tok, prompts, max_new_tokens, sample, batch=32, **kw):
        return [([0] + [100 + j] * 4, 1) for j, _ in enumerate(prompts)]  # answer j: "w1j w1j w1j w1j"

    monkeypatch.setattr(head_data, "answer", fake_answer)
    second = ["Translate to German: The cat sleeps.", "Summarize: something", "Translate the following text to French:\n\nHi"]
    answers = [(list(range(30)), 2), (list(range(50, 80)), 2), (list(range(5)), 2)]  # the French one is too short
    out = head_data.third_round(None, Tok(), random.Random(0), second, answers, 8)
    back = [p for p in out if p.startswith("Translate")]
    assert len(back) == 2 and all(p == "Translate German to English: " + Tok().decode(range(2, 30)) for p in back)
    assert len(out) == 8 and set(out) - set(back) == {" ".join([f"w{100 + j}"] * 4) for j in range(6)}


def test_passage_prompts_wrap_human_written_text():
    """The passage round's prompts hold passages of Python's own documentation verbatim (1-4 neighbours, or
    1-3 numbered documents), ask about a term the passage uses, and come out the same for the same seed."""
    from verispec.draft import head_data

    passages = head_data.human_passages()
    assert len(passages) > 300 and all(60 <= len(p.split()) <= 320 for p in passages)
    prompts = head_data.passage_round(random.Random(0), passages, 64)
    assert prompts == head_data.passage_round(random.Random(0), passages, 64)
    for q in prompts:
        held = [p for p in passages if p in q]
        assert held, q[:200]
        term = next((m for m in re.findall(r"about (\S+)\? Answer|mentions (\S+), then|What is (\S+)\?$", q)), None)
        if term:
            assert any("".join(term) in p for p in held)
    rag = [q for q in prompts if q.startswith("Document 1: ")]  # one retrieved document, or two or three
    assert any("Document 3: " in q for q in rag) and any("Document 2: " not in q for q in rag)


def test_a_windowed_head_keeps_greedy_output_and_few_rows(tiny_backend, tiny_head):
    """window = 4: the head re-anchors every 4 tokens and holds at most 2 * 4 rows + a chain; lossless anyway."""
    drafter = HeadDrafter(tiny_backend, tiny_head, window=4, confidence=None)
    rows = []
    sync = drafter._sync

    def spy(tokens):
        out = sync(tokens)
        rows.append(drafter.cache.len)
        return out

    drafter._sync = spy
    ref = Engine(tiny_backend, None).generate("hello world w20 w21 w22 w23", GREEDY, 24, chat=False)
    got = _engine(tiny_backend, drafter).generate("hello world w20 w21 w22 w23", GREEDY, 24, chat=False)
    assert got.tokens == ref.tokens and got.stats.drafts > 0
    assert max(rows) <= 8 and drafter._start > 0
