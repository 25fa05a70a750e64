"""DraftTree: merging drafts into a tree, paths, q rows, chain, depth; VerifyResult.output."""
import pytest
import torch

from verispec.tree import DraftTree, VerifyResult


def _q_for(drafts: torch.Tensor, V: int) -> torch.Tensor:
    """A q [B, k, gamma, V] that is a function of the prefix (distinct for distinct prefixes)."""
    B, k, gamma = drafts.shape
    q = torch.zeros(B, k, gamma, V, dtype=torch.float64)
    for b in range(B):
        for j in range(k):
            for t in range(gamma):
                prefix = tuple(drafts[b, j, :t].tolist())
                g = torch.Generator().manual_seed(hash((b, prefix)) % (1 << 31))
                q[b, j, t] = torch.softmax(torch.randn(V, generator=g, dtype=torch.float64), -1)
    return q


def _check_invariants(tree: DraftTree, drafts: torch.Tensor):
    B, k, gamma = drafts.shape
    N = tree.num_nodes
    assert tree.tokens.shape == tree.parent.shape == (B, N)
    assert tree.paths.shape == (B, k, gamma) and (tree.batch, tree.k, tree.gamma) == (B, k, gamma)
    for b in range(B):
        prefixes = {}
        for j in range(k):
            for t in range(gamma):
                node = int(tree.paths[b, j, t])
                tok = int(drafts[b, j, t])
                if tok < 0:
                    assert node == -1  # -1 padding past the end of a draft
                    continue
                assert 0 <= node < N
                assert int(tree.tokens[b, node]) == tok  # the path spells the draft
                par = int(tree.parent[b, node])
                assert par == (int(tree.paths[b, j, t - 1]) if t else -1)
                assert par < node  # parents precede children
                key = tuple(drafts[b, j, : t + 1].tolist())
                assert prefixes.setdefault(key, node) == node  # a shared prefix is one node
        used = set(prefixes.values())
        assert len(used) == len(prefixes)  # distinct prefixes are distinct nodes
        real = (tree.tokens[b] >= 0).nonzero().view(-1).tolist()
        assert set(real) == used  # every real node is some draft's prefix
        assert real == list(range(len(real)))  # real nodes first, then -1 padding
        assert (tree.parent[b, len(real):] == -1).all() and (tree.tokens[b, len(real):] == -1).all()
        # siblings never repeat a token (they would have been merged)
        sib = {}
        for i in real:
            key = (int(tree.parent[b, i]), int(tree.tokens[b, i]))
            assert key not in sib
            sib[key] = i


def test_merges_shared_prefixes():
    drafts = torch.tensor([[[1, 2, 3], [1, 2, 4], [5, 6, 7]]])
    tree = DraftTree.from_drafts(drafts, kind="onehot")
    _check_invariants(tree, drafts)
    assert tree.num_nodes == 7  # 1, 1-2, 1-2-3, 1-2-4, 5, 5-6, 5-6-7
    assert tree.paths[0, 0, :2].tolist() == tree.paths[0, 1, :2].tolist()
    assert tree.paths[0, 0, 2] != tree.paths[0, 1, 2]
    assert tree.kind == "onehot" and tree.q is None


def test_duplicates_stay_separate_paths():
    drafts = torch.tensor([[[4, 2], [4, 2], [4, 3]]])
    tree = DraftTree.from_drafts(drafts)
    _check_invariants(tree, drafts)
    assert tree.num_nodes == 3
    assert tree.k == 3  # the duplicate is still a draft (a separate trial)
    assert torch.equal(tree.paths[0, 0], tree.paths[0, 1])


def test_padding_and_batch_with_different_sizes():
    drafts = torch.tensor([[[1, 2, -1], [1, 3, 4]],
                           [[7, -1, -1], [7, -1, -1]]])
    tree = DraftTree.from_drafts(drafts)
    _check_invariants(tree, drafts)
    assert tree.num_nodes == 4
    assert tree.paths[0, 0, 2] == -1 and (tree.paths[1, :, 1:] == -1).all()
    assert tree.tokens[1].tolist() == [7, -1, -1, -1] and tree.parent[1].tolist() == [-1, -1, -1, -1]


def test_random_drafts_invariants():
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        B, k, gamma = (int(x) for x in torch.randint(1, 6, (3,), generator=g))
        drafts = torch.randint(0, 3, (B, k, gamma), generator=g)  # tiny vocabulary: many merges
        lengths = torch.randint(0, gamma + 1, (B, k), generator=g)
        drafts[torch.arange(gamma) >= lengths[..., None]] = -1
        tree = DraftTree.from_drafts(drafts)
        _check_invariants(tree, drafts)


def test_q_rows_map_to_parent_row():
    drafts = torch.tensor([[[1, 2, 3], [1, 2, 4], [5, 6, -1]],
                           [[0, 0, 0], [0, 1, 1], [0, 0, 0]]])
    V = 8
    q = _q_for(drafts, V)
    tree = DraftTree.from_drafts(drafts, q)
    _check_invariants(tree, drafts)
    assert tree.q.shape == (2, tree.num_nodes + 1, V) and tree.q.dtype == q.dtype
    rows = tree.row_of_prefix()
    has_children = torch.zeros(2, tree.num_nodes + 1, dtype=torch.bool)
    for b in range(2):
        for j in range(3):
            for t in range(3):
                if drafts[b, j, t] < 0:
                    continue
                row = 0 if t == 0 else int(tree.paths[b, j, t - 1]) + 1
                assert int(rows[b, j, t]) == row
                assert torch.equal(tree.q[b, row], q[b, j, t])  # the law token t was drawn from
                has_children[b, row] = True
    assert (tree.q[~has_children] == 0).all()  # leaves and padding rows carry no law


def test_q_shape_mismatch_raises():
    drafts = torch.tensor([[[1, 2]]])
    with pytest.raises(ValueError, match="q"):
        DraftTree.from_drafts(drafts, torch.full((1, 1, 3, 5), 0.2))


@pytest.mark.parametrize("bad,match", [(torch.tensor([[1, 2]]), "drafts"),
                                       (torch.tensor([[[1, -1, 2]]]), "-1"),
                                       (torch.zeros(1, 0, 3, dtype=torch.long), "empty"),
                                       (torch.zeros(1, 2, 0, dtype=torch.long), "empty")])
def test_bad_drafts_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        DraftTree.from_drafts(bad)


def test_bad_kind_raises():
    with pytest.raises(ValueError, match="kind"):
        DraftTree.from_drafts(torch.tensor([[[1]]]), kind="beam")


def test_non_contiguous_drafts():
    drafts = torch.tensor([[[1, 3], [2, 4]]]).transpose(1, 2)  # [1, k=2, gamma=2], not contiguous
    tree = DraftTree.from_drafts(drafts, kind="onehot")
    _check_invariants(tree, drafts)


def test_chain():
    tokens = torch.tensor([[5, 6, 7], [1, 1, -1]])
    V = 9
    q = torch.softmax(torch.randn(2, 3, V, generator=torch.Generator().manual_seed(0)), -1)
    tree = DraftTree.chain(tokens, q)
    assert tree.k == 1 and tree.num_nodes == 3
    assert tree.tokens.tolist() == [[5, 6, 7], [1, 1, -1]]
    assert tree.parent.tolist() == [[-1, 0, 1], [-1, 0, -1]]
    assert tree.paths[:, 0].tolist() == [[0, 1, 2], [0, 1, -1]]
    assert torch.equal(tree.q[0, :3], q[0]) and (tree.q[0, 3] == 0).all()
    assert torch.equal(tree.q[1, :2], q[1, :2]) and (tree.q[1, 2:] == 0).all()
    assert DraftTree.chain(tokens, kind="onehot").q is None
    with pytest.raises(ValueError, match="tokens"):
        DraftTree.chain(tokens[0])


def test_depth():
    drafts = torch.tensor([[[1, 2, 3], [1, 4, -1], [5, -1, -1]],
                           [[9, -1, -1], [9, -1, -1], [9, -1, -1]]])
    tree = DraftTree.from_drafts(drafts)
    d = tree.depth()
    assert d.shape == (2, tree.num_nodes + 1)
    assert (d[:, 0] == 0).all()
    for b in range(2):
        for j in range(3):
            for t in range(3):
                node = int(tree.paths[b, j, t])
                if node >= 0:
                    assert int(d[b, node + 1]) == t + 1
    assert (d[1, 2:] == -1).all()  # padding rows


def test_verify_result_output():
    drafts = torch.tensor([[[1, 2, 3]], [[4, 5, 6]]])
    tree = DraftTree.from_drafts(drafts)
    res = VerifyResult(path=torch.tensor([[0, 1, -1], [-1, -1, -1]]), num_accepted=torch.tensor([2, 0]),
                       next_token=torch.tensor([9, 8]), bonus=torch.tensor([False, False]))
    toks, count = res.output(tree)
    assert toks.tolist() == [[1, 2, 9, -1], [8, -1, -1, -1]]
    assert count.tolist() == [3, 1]


def test_drafts_gives_back_what_was_merged():
    """`DraftTree.drafts` inverts `from_drafts`, duplicates and padding included (what `with_branch` rebuilds from)."""
    for drafts in (torch.tensor([[[1, 2, 3], [1, 2, 4], [5, 6, 7]]]), torch.tensor([[[4, 2], [4, 2], [4, 3]]]),
                   torch.tensor([[[1, 2, -1], [1, 3, 4]], [[7, -1, -1], [7, -1, -1]]])):
        assert torch.equal(DraftTree.from_drafts(drafts, kind="onehot").drafts(), drafts)


def _random_drafts(g: torch.Generator, B: int) -> torch.Tensor:
    k, gamma = (int(x) for x in torch.randint(1, 7, (2,), generator=g))
    drafts = torch.randint(0, 3, (B, k, gamma), generator=g)  # tiny vocabulary: many merges and duplicates
    lengths = torch.randint(0, gamma + 1, (B, k), generator=g)
    drafts[torch.arange(gamma) >= lengths[..., None]] = -1
    return drafts


def _trie_matches_tensor_merge(cases: int = 60) -> bool:
    """One request's drafts without laws take `_merge_one` (a Python trie); the same drafts twice over take the
    tensor merge. Every field must agree."""
    g = torch.Generator().manual_seed(1)
    for _ in range(cases):
        drafts = _random_drafts(g, 1)
        one = DraftTree.from_drafts(drafts, kind="onehot")
        two = DraftTree.from_drafts(drafts.expand(2, -1, -1).contiguous(), kind="onehot")
        if not (torch.equal(one.tokens, two.tokens[:1]) and torch.equal(one.parent, two.parent[:1])
                and torch.equal(one.paths, two.paths[:1]) and one.kind == two.kind and one.q is None):
            return False
    return True


def test_one_request_trie_equals_tensor_merge():
    assert _trie_matches_tensor_merge()
    g = torch.Generator().manual_seed(2)
    for _ in range(30):
        drafts = _random_drafts(g, 1)
        _check_invariants(DraftTree.from_drafts(drafts), drafts)


def test_trie_numbered_draft_major_is_caught(monkeypatch):
    """Control: a trie that numbers its nodes draft by draft (not depth by depth) builds a valid tree, a
    different one; the comparison above must see it."""
    def draft_major(drafts, kind):
        node_of, tokens, parent = {}, [], []
        paths = [[-1] * len(drafts[0]) for _ in drafts]
        for j, d in enumerate(drafts):
            up = -1
            for t, x in enumerate(d):
                if x < 0:
                    break
                n = node_of.setdefault((up, x), len(tokens))
                if n == len(tokens):
                    tokens.append(x), parent.append(up)
                paths[j][t] = up = n
        return DraftTree(torch.tensor([tokens]).view(1, -1), torch.tensor([parent]).view(1, -1),
                         torch.tensor([paths]), None, kind)

    monkeypatch.setattr(DraftTree, "_merge_one", staticmethod(draft_major))
    assert not _trie_matches_tensor_merge()
