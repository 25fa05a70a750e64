"""Can a draft model's tokens be verified by a target? Same ids must mean the same strings.

Speculative decoding compares token ids: a drafter whose tokenizer numbers the vocabulary
differently proposes garbage (or, worse, plausible-looking but wrong tokens). The check is the
one transformers' assisted generation makes before it falls back to universal assisted
decoding: equal vocabulary sizes, and the same strings for the first `n` token ids.
"""
from __future__ import annotations

N_CHECK = 1000  # token ids compared string by string


def check_vocab(draft, target, n: int = N_CHECK) -> None:
    """Raise ValueError unless `draft` and `target` (Backends) share the vocabulary.

    Compares `vocab_size` and `tokenizer.decode([i])` for the first `n` ids.
    """
    if draft.vocab_size != target.vocab_size:
        raise ValueError(f"draft model vocabulary ({draft.vocab_size} tokens, {draft.name}) differs from the "
                         f"target's ({target.vocab_size} tokens, {target.name}): they must share a tokenizer")
    dtok, ttok = draft.tokenizer, target.tokenizer
    for i in range(min(n, target.vocab_size)):
        a, b = dtok.decode([i]), ttok.decode([i])
        if a != b:
            raise ValueError(f"draft and target tokenizers differ at token id {i}: {a!r} (draft, {draft.name}) "
                             f"vs {b!r} (target, {target.name}); they must share a tokenizer")
