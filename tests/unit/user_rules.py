"""Rules a user might hand to `verispec certify package.module:function` (used by test_certify_cli)."""
from verispec.certify.controls import TokenSoftQ
from verispec.verify import get_verifier

_token = get_verifier("token")


def my_token(tree, p, noise):
    """A correct rule: token-level verification, exposing its exact law."""
    return _token(tree, p, noise)


my_token.law = _token.law
my_token.draft_kinds = ("iid", "onehot")


def sampled_only(tree, p, noise):
    """A correct rule without a closed-form law: certified by the sampled checks."""
    return _token(tree, p, noise)


_broken = TokenSoftQ()


def broken(tree, p, noise):
    """A biased rule: greedy drafts verified with the drafter's soft q."""
    return _broken(tree, p, noise)


broken.law = _broken.law
broken.draft_kinds = ("onehot",)
