"""Input validation of the verifiers (clear ValueErrors naming the argument) and degenerate inputs."""
import pytest
import torch

from verispec.noise import NoiseSource
from verispec.tree import DraftTree
from verispec.verify import REGISTRY, check_inputs, get_verifier

V = 12
KIND = {"greedy": "onehot", "specinfer-wor": "wor", "gumbel": "gumbel", "gls": "gumbel", "gls-strong": "gumbel"}
ALL = list(REGISTRY)
STOCHASTIC = [n for n in ALL if not REGISTRY[n].deterministic]
NEEDS_Q = [n for n in ALL if REGISTRY[n].needs_q]


def _noise(B=1, seed=0):
    return NoiseSource(seed).step(torch.arange(B), torch.full((B,), 100))


def _dist(B, R, seed=0, support=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.softmax(torch.randn(B, R, V, generator=g, dtype=torch.float64) * 2, -1)
    if support is not None:
        x = torch.where(support, x, 0.0)
        x = x / x.sum(-1, keepdim=True)
    return x


def _problem(name, B=1, gamma=3, k=None, seed=0):
    """A valid (rule, tree, p, noise) for `name`."""
    rule = REGISTRY[name]
    k = k or (1 if rule.max_drafts == 1 else 2)
    kind = KIND.get(name, "iid")
    g = torch.Generator().manual_seed(seed)
    drafts = torch.randint(0, V, (B, k, gamma), generator=g)
    if kind == "wor":
        drafts[:, :, 0] = torch.arange(k)  # distinct children of the root
    q = None
    if kind in ("iid", "wor"):
        qd = _dist(B, gamma, seed + 1)  # depth-only law: consistent for shared prefixes
        q = qd[:, None].expand(B, k, gamma, V)
    tree = DraftTree.from_drafts(drafts, q, kind)
    p = _dist(B, tree.num_nodes + 1, seed + 2)
    return rule, tree, p, _noise(B, seed)


def _draw(qd, k, kind, gen, noise):
    """Drafts [B, k, gamma] of `kind` from the depth-t laws qd [B, gamma, V] (noise: for gumbel drafts)."""
    B, gamma, _ = qd.shape
    if kind == "onehot":
        return qd.argmax(-1)[:, None].expand(B, k, gamma).contiguous()
    if kind == "gumbel":  # draft j at depth t: exponential race of q on noise row j at position t
        from verispec.coupling.comm_free import race_argmin

        return torch.stack([race_argmin(qd[:, t, None], noise.exponential(t, k, V)) for t in range(gamma)], 2)
    drafts = torch.multinomial(qd.reshape(-1, V), k, replacement=True, generator=gen)
    drafts = drafts.view(B, gamma, k).transpose(1, 2).contiguous()
    if kind == "wor":  # k distinct children of the root (without replacement), then one child per node
        drafts[:, :, 0] = torch.stack([torch.multinomial(qd[b, 0], k, generator=gen) for b in range(B)])
    return drafts


def _valid_result(res, tree, p):
    B = tree.batch
    assert res.next_token.shape == (B,) and res.num_accepted.shape == (B,)
    assert ((res.next_token >= 0) & (res.next_token < p.shape[-1])).all()
    assert ((res.num_accepted >= 0) & (res.num_accepted <= tree.gamma)).all()
    # the emitted token has positive target probability after the accepted path
    last = torch.where(res.num_accepted > 0,
                       res.path.gather(1, (res.num_accepted - 1).clamp(min=0)[:, None])[:, 0] + 1, 0)
    assert (p[torch.arange(B), last, res.next_token] > 0).all()


# ---------------------------------------------------------------- p


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_p(name, bad):
    rule, tree, p, noise = _problem(name)
    p = p.clone()
    p[0, 1, 3] = bad
    with pytest.raises(ValueError, match=r"^p contains NaN or inf"):
        rule(tree, p, noise)


@pytest.mark.parametrize("name", ALL)
def test_negative_p(name):
    rule, tree, p, noise = _problem(name)
    p = p.clone()
    p[0, 0, 1] += p[0, 0, 0] + 0.05  # same row sum, one entry negative
    p[0, 0, 0] = -0.05
    with pytest.raises(ValueError, match=r"^p contains negative"):
        rule(tree, p, noise)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("scale", [0.9, 1.01, 2.0])
def test_p_rows_must_sum_to_one(name, scale):
    rule, tree, p, noise = _problem(name)
    p = p.clone()
    p[0, -1] *= scale
    with pytest.raises(ValueError, match=r"^p has a row that does not sum to 1"):
        rule(tree, p, noise)


def test_float32_rounding_is_tolerated():
    rule, tree, p, noise = _problem("token")
    p32 = p.float() * (1 + 3e-6)  # float32 softmax is ~1e-6 off
    _valid_result(rule(tree, p32, noise), tree, p)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("delta", [(0, 0, 0), (0, 1, 0), (0, -1, 0), (1, 0, 0)])
def test_p_shape_mismatch(name, delta):
    rule, tree, p, noise = _problem(name)
    B, R, W = p.shape
    bad = torch.full((B + delta[0], R + delta[1], W + delta[2]), 1.0 / (W + delta[2]), dtype=p.dtype)
    if delta == (0, 0, 0):
        bad = bad[0]  # wrong number of dimensions
    with pytest.raises(ValueError, match=r"^p must be \[B, N \+ 1, V\]"):
        rule(tree, bad, noise)


def test_p_not_a_tensor():
    rule, tree, p, noise = _problem("token")
    with pytest.raises(ValueError, match=r"^p must be"):
        rule(tree, p.tolist(), noise)


def test_padding_rows_of_p_are_not_checked():
    # request 1 has fewer nodes: its padding rows may hold anything
    drafts = torch.tensor([[[1, 2, 3]], [[4, -1, -1]]])
    q = _dist(2, 3, 1)[:, None]
    tree = DraftTree.from_drafts(drafts, q)
    p = _dist(2, 4, 2)
    p[1, 2:] = float("nan")
    _valid_result(get_verifier("token")(tree, p, _noise(2)), tree, torch.nan_to_num(p))


# ---------------------------------------------------------------- q


@pytest.mark.parametrize("name", [n for n in NEEDS_Q if "iid" in REGISTRY[n].draft_kinds])
def test_drafted_token_with_zero_q(name):
    rule, tree, p, noise = _problem(name)
    q = tree.q.clone()
    tok = int(tree.tokens[0, tree.paths[0, 0, 0]])
    q[0, 0, tok] = 0.0
    q[0, 0] /= q[0, 0].sum()
    tree = DraftTree(tree.tokens, tree.parent, tree.paths, q, tree.kind)
    with pytest.raises(ValueError, match=r"drafted token has q = 0"):
        rule(tree, p, noise)


@pytest.mark.parametrize("name", ["token", "specinfer", "block"])
@pytest.mark.parametrize("bad,match", [(float("nan"), r"^q contains NaN or inf"), (-0.1, r"^q contains negative"),
                                       (0.5, r"^q has a row that does not sum to 1")])
def test_bad_q(name, bad, match):
    rule, tree, p, noise = _problem(name)
    q = tree.q.clone()
    q[0, 0, V - 1] = bad if bad != 0.5 else q[0, 0, V - 1] + 0.5
    tree = DraftTree(tree.tokens, tree.parent, tree.paths, q, tree.kind)
    with pytest.raises(ValueError, match=match):
        rule(tree, p, noise)


@pytest.mark.parametrize("name", [n for n in NEEDS_Q if "iid" in REGISTRY[n].draft_kinds])
def test_missing_q_for_iid(name):
    rule, tree, p, noise = _problem(name)
    tree = DraftTree(tree.tokens, tree.parent, tree.paths, None, "iid")
    with pytest.raises(ValueError, match=r"^tree\.q is required"):
        rule(tree, p, noise)


@pytest.mark.parametrize("name", [n for n in NEEDS_Q if "iid" in REGISTRY[n].draft_kinds])
def test_q_shape_must_match_p(name):
    rule, tree, p, noise = _problem(name)
    short = DraftTree(tree.tokens, tree.parent, tree.paths, tree.q[..., :-1], tree.kind)
    with pytest.raises(ValueError, match=r"^tree\.q must have the shape of p"):
        rule(short, p, noise)
    wide_p = torch.cat([p, torch.zeros_like(p[..., :1])], -1)  # a V + 1 target against a V draft
    with pytest.raises(ValueError, match=r"^tree\.q must have the shape of p"):
        rule(tree, wide_p, noise)


# ---------------------------------------------------------------- tree


@pytest.mark.parametrize("name", ALL)
def test_empty_tree(name):
    rule = REGISTRY[name]
    kind = KIND.get(name, "iid")
    drafts = torch.full((2, 1, 3), -1)
    q = _dist(2, 3)[:, None] if kind in ("iid", "wor") else None
    tree = DraftTree.from_drafts(drafts, q, kind)
    p = _dist(2, 1)
    with pytest.raises(ValueError, match=r"^tree is empty"):
        rule(tree, p, _noise(2))


@pytest.mark.parametrize("name,kind", [(n, kd) for n in ALL for kd in ("iid", "wor", "onehot", "gumbel")
                                       if kd not in REGISTRY[n].draft_kinds])
def test_wrong_draft_kind(name, kind):
    rule, tree, p, noise = _problem(name)
    tree = DraftTree(tree.tokens, tree.parent, tree.paths, tree.q, kind)
    with pytest.raises(ValueError, match=rf"^verifier '{name}' cannot verify drafts of kind '{kind}'"):
        rule(tree, p, noise)


def test_wrong_kind_examples_exist():
    assert "wor" not in REGISTRY["spectr"].draft_kinds and "gumbel" not in REGISTRY["token"].draft_kinds


@pytest.mark.parametrize("name", [n for n in ALL if REGISTRY[n].max_drafts == 1])
def test_too_many_drafts_for_single_draft_rule(name):
    rule = REGISTRY[name]
    kind = KIND.get(name, "iid")
    drafts = torch.tensor([[[1, 2], [3, 4]]])
    q = _dist(1, 2)[:, None].expand(1, 2, 2, V) if kind in ("iid", "wor") else None
    tree = DraftTree.from_drafts(drafts, q, kind)
    with pytest.raises(ValueError, match=rf"^verifier '{name}' takes at most 1 draft\(s\), got k = 2"):
        rule(tree, _dist(1, tree.num_nodes + 1), _noise())


@pytest.mark.parametrize("name", ALL)
def test_token_id_out_of_vocab(name):
    rule, tree, p, noise = _problem(name)
    tokens = tree.tokens.clone()
    tokens[0, 0] = V
    tree = DraftTree(tokens, tree.parent, tree.paths, tree.q, tree.kind)
    with pytest.raises(ValueError, match=rf"^tree\.tokens has a token id >= V = {V}"):
        rule(tree, p, noise)


def test_tree_not_a_draft_tree():
    rule, tree, p, noise = _problem("token")
    with pytest.raises(ValueError, match=r"^tree must be a DraftTree"):
        rule((tree.tokens, tree.parent), p, noise)


def test_unknown_verifier():
    with pytest.raises(ValueError, match=r"unknown verifier 'nope'.*token"):
        get_verifier("nope")


# ---------------------------------------------------------------- noise


@pytest.mark.parametrize("name", STOCHASTIC)
def test_noise_none_for_stochastic_rule(name):
    rule, tree, p, _ = _problem(name)
    with pytest.raises(ValueError, match=rf"^verifier '{name}' needs a noise source \(noise=None given\)"):
        rule(tree, p, None)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_noise_batch_mismatch(name):
    rule, tree, p, _ = _problem(name, B=2)
    with pytest.raises(ValueError, match=r"^noise is for 3 requests, the tree for 2"):
        rule(tree, p, _noise(3))


def test_greedy_without_noise():
    rule = get_verifier("greedy")
    assert rule.deterministic
    p = _dist(2, 4, 5)
    amax = p.argmax(-1)  # [2, 4]
    # request 0 drafts the argmax chain (p rows depend on depth only here), request 1 is wrong at depth 1
    drafts = torch.stack([amax[0, :3], torch.stack([amax[1, 0], (amax[1, 1] + 1) % V, amax[1, 2]])])[:, None]
    tree = DraftTree.from_drafts(drafts, kind="onehot")
    res = rule(tree, p, None)
    assert res.num_accepted.tolist() == [3, 1]
    assert res.next_token.tolist() == [int(amax[0, 3]), int(amax[1, 1])]
    assert res.bonus.tolist() == [True, False]
    # the same with noise given, and with iid drafts (greedy ignores q)
    assert torch.equal(rule(tree, p, _noise(2)).next_token, res.next_token)


# ---------------------------------------------------------------- degenerate laws


@pytest.mark.parametrize("name", ALL)
def test_p_equals_q_zero_mass_residual(name):
    """p == q exactly: every residual has zero mass; no NaN, every draft accepted where the rule is RRS-like."""
    rule = REGISTRY[name]
    kind = KIND.get(name, "iid")
    B, gamma = 4, 3
    k = 1 if rule.max_drafts == 1 else 3
    qd = _dist(B, gamma + 1, 7)  # law at depth t (for every prefix)
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        noise = _noise(B, seed)
        drafts = _draw(qd[:, :gamma], k, kind, g, noise)
        q = qd[:, None, :gamma].expand(B, k, gamma, V) if kind in ("iid", "wor") else None
        tree = DraftTree.from_drafts(drafts, q, kind)
        p = qd[torch.arange(B)[:, None], tree.depth().clamp(min=0)]
        if kind == "onehot":
            p = torch.nn.functional.one_hot(p.argmax(-1), V).double()
        res = rule(tree, p, noise)
        _valid_result(res, tree, p)
        if name != "gls-strong":  # p / q = 1 (and race drafts on the verifier's noise): nothing is rejected
            assert (res.num_accepted == gamma).all() and res.bonus.all()
        if rule.exact_law:
            law = rule.law(tree, p)
            assert torch.isfinite(law).all() and (law >= 0).all()
            assert torch.allclose(law.sum((1, 2)), torch.ones(B, dtype=law.dtype))


@pytest.mark.parametrize("name", [n for n in ALL if n != "greedy"])
def test_disjoint_supports(name):
    """q lives on the top half of the vocabulary, p on the bottom half: every draft is rejected."""
    rule = REGISTRY[name]
    kind = KIND.get(name, "iid")
    B, gamma = 3, 3
    k = 1 if rule.max_drafts == 1 else 2
    low = torch.arange(V) < V // 2
    qd = _dist(B, gamma, 3, support=~low)
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        noise = _noise(B, seed)
        drafts = _draw(qd, k, kind, g, noise)
        q = qd[:, None].expand(B, k, gamma, V) if kind in ("iid", "wor") else None
        tree = DraftTree.from_drafts(drafts, q, kind)
        p = _dist(B, tree.num_nodes + 1, 11 + seed, support=low)
        res = rule(tree, p, noise)
        _valid_result(res, tree, p)
        assert (res.num_accepted == 0).all() and not res.bonus.any()
        assert low[res.next_token].all()
        if rule.exact_law:
            law = rule.law(tree, p)
            assert torch.isfinite(law).all()
            assert torch.allclose(law[:, 0], p[:, 0], atol=1e-12)  # the output is just a draw from p


def test_check_inputs_returns_float64_renormalised():
    rule, tree, p, _ = _problem("token")
    tree2, p2 = check_inputs(rule, tree, p.float())
    assert p2.dtype == torch.float64 and tree2.q.dtype == torch.float64
    assert torch.allclose(p2.sum(-1), torch.ones(p2.shape[:2], dtype=torch.float64), atol=1e-15)
