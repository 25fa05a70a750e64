"""Drafter invariance of the Gumbel rules (Daliri et al. arXiv 2408.07978; Rowan et al. arXiv 2506.05632).

`gumbel` must reproduce target-only Gumbel sampling with the same seed token for token, for
different drafters and draft lengths; `gls-strong` likewise with K rows; `gls` is conditionally
invariant: the output depends on the draft tokens only, not on the model that produced them.
"""
import torch

from verispec.certify.sampled import chain_check
from verispec.certify.toy import make_pair
from verispec.coupling.comm_free import race_argmin
from verispec.noise import NoiseSource
from verispec.verify import get_verifier

N, LENGTH = 20_000, 5


def target_only(P, seed, rows=1):
    """Plain Gumbel sampling from P: token t = argmin_x min_{k < rows} E_t[k, x] / p(x | prefix)."""
    src = NoiseSource(seed)
    code = torch.zeros(N, dtype=torch.int64)
    req = torch.arange(N)
    for t in range(LENGTH):
        E = src.step(req, torch.full((N,), t)).exponential(0, rows, P.V).amin(1)
        code = code * P.V + race_argmin(P.rows(code, t), E)
    return code


def test_gumbel_equals_target_only_for_every_drafter_and_gamma():
    P, Q = make_pair(4, LENGTH + 4, 3, "close")
    _, Q2 = make_pair(4, LENGTH + 4, 9, "random")
    ref = target_only(P, seed=7)
    for drafter in (Q, Q2):
        for gamma in (1, 3):
            for kind in ("gumbel", "iid"):
                _, got = chain_check(get_verifier("gumbel"), P, Q, gamma, 1, kind, LENGTH, n=N, seed=7,
                                     drafter_Q=drafter)
                assert torch.equal(got, ref), (gamma, kind)


def test_gls_strong_equals_target_only_with_k_rows():
    P, Q = make_pair(4, LENGTH + 4, 4, "close")
    _, Q2 = make_pair(4, LENGTH + 4, 5, "random")
    ref = target_only(P, seed=3, rows=3)
    for drafter in (Q, Q2):
        for gamma in (2, 3):
            _, got = chain_check(get_verifier("gls-strong"), P, Q, gamma, 3, "gumbel", LENGTH, n=N, seed=3,
                                 drafter_Q=drafter)
            assert torch.equal(got, ref)


def test_gls_depends_on_draft_tokens_only():
    """Two deterministic drafters with different laws but the same token ranking give the same output."""
    P, Q = make_pair(4, LENGTH + 4, 4, "close")
    cubed = Q.table**3
    Q3 = type(Q)(Q.V, Q.max_len, cubed / cubed.sum(1, keepdim=True))  # same ranking, another law
    _, a = chain_check(get_verifier("gls"), P, Q, 2, 3, "onehot", LENGTH, n=N, seed=5, drafter_Q=Q)
    _, b = chain_check(get_verifier("gls"), P, Q, 2, 3, "onehot", LENGTH, n=N, seed=5, drafter_Q=Q3)
    assert torch.equal(a, b)
    _, c = chain_check(get_verifier("gls"), P, Q, 2, 3, "iid", LENGTH, n=N, seed=5, drafter_Q=Q)
    assert not torch.equal(a, c)  # other draft tokens do change the output (conditional invariance only)


def test_gumbel_output_is_not_trivially_invariant():
    """Control: keying the noise by iteration instead of absolute position breaks invariance."""
    from verispec.certify.controls import StepKeyedGumbelNoise

    P, Q = make_pair(4, LENGTH + 4, 3, "close")
    ref = target_only(P, seed=7)
    _, got = chain_check(get_verifier("gumbel"), P, Q, 3, 1, "gumbel", LENGTH, n=N, seed=7,
                         noise_source=StepKeyedGumbelNoise(7))
    assert not torch.equal(got, ref)
