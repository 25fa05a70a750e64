"""The ``Tokenizer`` contract over a Hugging Face tokenizer."""
from __future__ import annotations

from typing import Sequence

from .base import Tokenizer

__all__ = ["HFTokenizer"]


class HFTokenizer(Tokenizer):
    """Wraps a ``transformers`` tokenizer (and the model's generation config for EOS ids)."""

    def __init__(self, tok, generation_config=None) -> None:
        self.hf = tok
        eos: set[int] = set()
        if tok.eos_token_id is not None:
            eos.add(int(tok.eos_token_id))
        gen_eos = getattr(generation_config, "eos_token_id", None)
        if isinstance(gen_eos, int):
            eos.add(gen_eos)
        elif gen_eos is not None:
            eos.update(int(t) for t in gen_eos)
        self._eos = eos

    def encode(self, text: str, add_special: bool = False) -> list[int]:
        """Token ids; ``add_special`` adds what the tokenizer's post-processor adds (BOS...)."""
        return list(self.hf.encode(text, add_special_tokens=add_special))

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        """Text of ``ids``."""
        return self.hf.decode([int(t) for t in ids], skip_special_tokens=skip_special)

    def apply_chat_template(self, messages: list[dict]) -> list[int]:
        """Prompt ids from the tokenizer's chat template, with the generation prompt."""
        if not getattr(self.hf, "chat_template", None):
            raise ValueError("this tokenizer has no chat template")
        out = self.hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if hasattr(out, "keys"):  # transformers >= 5 returns a BatchEncoding by default
            out = out["input_ids"]
        return [int(t) for t in out]

    @property
    def eos_token_ids(self) -> set[int]:
        """EOS of the tokenizer plus the generation config's EOS ids."""
        return set(self._eos)
