"""LookupThenModel: prompt lookup first, the draft model when the lookup has nothing worth drafting."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from verispec.draft import DraftRequest, ModelDrafter  # noqa: E402
from verispec.draft.hybrid import LookupThenModel  # noqa: E402
from verispec.draft.ngram import NGramDrafter  # noqa: E402
from verispec.noise import NoiseSource  # noqa: E402
from verispec.sampling import SamplingParams  # noqa: E402

REPEATS = [5, 6, 7, 8, 9, 10, 11, 5, 6, 7]  # "5 6 7" occurred before: lookup drafts 8 9 10 11 ...
FRESH = [1, 17, 42, 99, 5, 63, 8, 120, 33]  # no repeated bigram at the end: nothing to look up


def request(tokens, params=SamplingParams(0.0)):
    return DraftRequest(list(tokens), NoiseSource(0).step(0, 0), params, 1, "onehot")


@pytest.fixture
def hybrid(tiny_backend):
    return LookupThenModel(NGramDrafter(), ModelDrafter(tiny_backend))


def test_lookup_first(hybrid):
    tree = hybrid.propose(request(REPEATS), 4)
    assert tree.tokens[0].tolist() == [8, 9, 10, 11]
    assert hybrid.match_length >= 3 and hybrid._used is hybrid.lookup


def test_model_when_nothing_to_look_up(hybrid, tiny_backend):
    tree = hybrid.propose(request(FRESH), 3)
    assert hybrid.match_length == 0 and hybrid._used is hybrid.fallback
    ref = ModelDrafter(tiny_backend).propose(request(FRESH), 3)  # the model's own greedy draft
    assert tree.tokens.tolist() == ref.tokens.tolist()


def test_gate_sends_short_matches_to_the_model(hybrid):
    asked = []

    def gate(match, available):
        asked.append(match)
        return 0 if match > 0 else 2  # lookup not worth it; the model may draft 2

    hybrid.gate = gate
    tree = hybrid.propose(request(REPEATS), 4)
    assert asked[0] > 0 and asked[-1] == 0
    assert tree.num_nodes == 2 and hybrid.match_length == 0
    hybrid.gate = lambda match, available: 0  # nothing is worth drafting
    assert hybrid.propose(request(REPEATS), 4) is None


def test_catch_up_is_reported(hybrid):
    hybrid.prepare(FRESH)  # lazy: the model prefills when it first drafts
    assert hybrid.fallback._tokens == []
    hybrid.propose(request(FRESH), 2)
    assert hybrid.catchup_s > 0 and hybrid.fallback._tokens[: len(FRESH)] == FRESH
    hybrid.propose(request(FRESH + [3, 4, 5, 6, 7, 8]), 2)  # six tokens decoded without the model
    assert hybrid.catchup_s > 0 and hybrid.fallback._tokens[: len(FRESH) + 6] == FRESH + [3, 4, 5, 6, 7, 8]


def test_model_drafter_prefills_when_it_first_drafts(tiny_backend):
    drafter = ModelDrafter(tiny_backend)
    drafter.prepare(FRESH)  # lazy: a request the controller never drafts in costs no prefill
    assert drafter._tokens == []
    drafter.propose(request(FRESH), 2)
    assert drafter.catchup_s > 0 and drafter._tokens[: len(FRESH)] == FRESH


def test_bad_parts():
    with pytest.raises(ValueError, match="NGramDrafter and a model drafter"):
        LookupThenModel(NGramDrafter(), NGramDrafter())


def test_sampled_target_gets_iid_drafts(hybrid):
    """Lookup chains as draws from point masses; the model's own q when it drafts."""
    t1 = SamplingParams(1.0)
    tree = hybrid.propose(DraftRequest(list(REPEATS), NoiseSource(0).step(0, 0), t1, 1, "iid"), 4)
    assert tree.kind == "iid" and tree.tokens[0].tolist() == [8, 9, 10, 11]
    q = tree.q[0]  # [N + 1, V]: row i is the law of node i's token
    assert torch.equal(q[torch.arange(4), tree.tokens[0]], torch.ones(4, dtype=q.dtype))
    assert torch.equal(q.sum(-1)[:4], torch.ones(4, dtype=q.dtype))
    tree = hybrid.propose(DraftRequest(list(FRESH), NoiseSource(0).step(0, 0), t1, 2, "iid"), 3)
    assert tree.kind == "iid" and hybrid.match_length == 0 and tree.paths.shape[1] == 2  # the model's k = 2


# ---- the copy branch ------------------------------------------------------------------------------------
ONE_MATCH = [1, 17, 42, 99, 5, 63, 8, 120, 33, 42]  # the last token occurred once before, its bigram never


def tree_request(tokens):
    return DraftRequest(list(tokens), NoiseSource(0).step(0, 0), SamplingParams(0.0), 1, "onehot", any_tree=True)


def paths(tree):
    return {tuple(t for t in d if t >= 0) for d in tree.drafts()[0].tolist()}


def test_copy_branch_joins_the_model_tree(tiny_backend):
    """Where the verifier takes any tree, the model's draft and the tokens that followed the last token's earlier
    occurrence are both drafted; elsewhere the model's draft alone."""
    model = ModelDrafter(tiny_backend).propose(request(ONE_MATCH), 4)  # what the hybrid lets it draft of 5
    hybrid = LookupThenModel(NGramDrafter(), ModelDrafter(tiny_backend), NGramDrafter(max_ngram=1, min_ngram=1), 4)
    tree = hybrid.propose(tree_request(ONE_MATCH), 5)
    assert hybrid._used is hybrid.fallback  # no bigram to look up: the model drafted
    assert paths(tree) == paths(model) | {(99, 5, 63, 8)}
    assert tree.kind == "onehot" and tree.gamma == 4
    assert paths(hybrid.propose(tree_request(ONE_MATCH), 2)) == {(99, 5), tuple(model.tokens[0, :2].tolist())}
    chain_only = hybrid.propose(request(ONE_MATCH), 5)  # a chain verifier: no branch
    assert torch.equal(chain_only.tokens, model.tokens)
    assert hybrid.propose(tree_request(FRESH), 5).num_nodes == 4  # no earlier occurrence: no branch


def test_with_branch_merges_a_shared_prefix():
    from verispec.draft.hybrid import with_branch
    from verispec.tree import DraftTree

    tree = DraftTree.from_drafts(torch.tensor([[[1, 2, 3], [1, 4, -1]]]), None, "onehot")
    merged = with_branch(tree, [1, 2, 9, 10])
    assert paths(merged) == {(1, 2, 3), (1, 4), (1, 2, 9, 10)}
    assert merged.num_nodes == 6  # 1, 2, 4, 3, 9, 10: the branch shares 1-2
    assert with_branch(tree, []) is tree


def test_the_copy_branch_joins_as_far_as_its_nodes_pay():
    """`priced_branch`: the whole branch where rows are nearly free or no price is given; on a curve whose price
    jumps past 4 rows (the AVX2 CPU's, docs/speed.md §24), only the branch's prefix that keeps the tree within 4
    rows (its shared prefix is free); none of it where even one more node is dear. The same code without the
    price check would join all of it, and fail."""
    from verispec.draft.hybrid import priced_branch
    from verispec.tree import DraftTree

    tree = DraftTree.from_drafts(torch.tensor([[[1, 2], [5, -1]]]), None, "onehot")  # 3 nodes: 1, 2, 5
    branch = [1, 7, 8, 9]  # shares 1: 3 new nodes at most
    assert paths(priced_branch(tree, branch)) == {(1, 2), (5,), (1, 7, 8, 9)}
    assert priced_branch(tree, branch, lambda n: 1.0 + 0.02 * n).num_nodes == 6
    jump = lambda n: 1.04 if n <= 3 else 1.6  # noqa: E731 - rows 1-4 cost one step, 5 and more 1.6
    assert paths(priced_branch(tree, branch, jump)) == {(1, 2), (5,)}  # the tree holds 4 rows already
    small = DraftTree.from_drafts(torch.tensor([[[1, -1]]]), None, "onehot")  # 1 node
    grown = priced_branch(small, branch, jump)
    assert paths(grown) == {(1,), (1, 7, 8)} and grown.num_nodes == 3  # 3 nodes: 4 rows
    assert paths(priced_branch(small, [1], jump)) == {(1,)}  # nothing new: the tree as it was
    assert priced_branch(tree, [], jump) is tree


def test_bad_copy_branch(tiny_backend):
    lookup, model = NGramDrafter(), ModelDrafter(tiny_backend)
    with pytest.raises(ValueError, match="copy must be an NGramDrafter"):
        LookupThenModel(lookup, model, lookup)
    with pytest.raises(ValueError, match="copy_len"):
        LookupThenModel(lookup, model, NGramDrafter(), 0)


@pytest.mark.parametrize("flag, length", [([], 4), (["--copy-branch", "3"], 3), (["--copy-branch", "0"], 0)])
def test_copy_branch_flag_and_greedy_output(tmp_path, tiny_llama_dir, fit_tiny_head, flag, length):
    """`--copy-branch` reaches the ngram+head drafter from both commands; with the branch (on by default) greedy
    output stays plain decoding's, and the branch is drafted."""
    from verispec.bench.command import build_parser as bench_parser
    from verispec.cli import build_parser
    from verispec.cli_args import head_config
    from verispec.draft.head_model import save_head
    from verispec.engine import Engine
    from verispec.engine.build import EngineConfig, build_engine

    path = str(tmp_path / "h.pt")
    save_head(fit_tiny_head(tiny_llama_dir), path, dtype=torch.float32)
    gen = head_config(build_parser().parse_args(["generate", "hi", "--draft-head", path] + flag))
    assert gen == head_config(bench_parser().parse_args(["--draft-head", path] + flag))
    eng = build_engine(EngineConfig(backend="torch", model=tiny_llama_dir, drafter="ngram+head", gamma=3, **gen))
    assert (eng.drafter.copy is None) == (length == 0) and (not length or eng.drafter.copy_len == length)
    if not length:
        return
    drafted = []  # (the lookup continuation there, the tree) where the head drafted
    propose = eng.drafter.propose

    def spy(req, budget):
        tree = propose(req, budget)
        if eng.drafter._used is eng.drafter.fallback:
            drafted.append((tuple(eng.drafter.copy.continuation(req.tokens, min(budget, length))), tree))
        return tree

    eng.drafter.propose = spy
    prompt = "w1 w2 w3 w9 w4 w5 w3 w6"
    ref = Engine(eng.backend, None).generate(prompt, SamplingParams(0.0), 32, chat=False)
    got = eng.generate(prompt, SamplingParams(0.0), 32, chat=False)
    assert got.tokens == ref.tokens and got.stats.drafts > 0
    assert any(cont and cont in paths(tree) for cont, tree in drafted)  # a branch joined some head tree
