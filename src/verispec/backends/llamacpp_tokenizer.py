"""The tokenizer embedded in a GGUF file, through llama.cpp.

The chat prompt is built exactly the way llama-cpp-python's
``Llama.create_chat_completion`` builds it for a GGUF that carries
``tokenizer.chat_template``: the template is rendered by its
``Jinja2ChatFormatter`` (same Jinja environment, same BOS/EOS strings, the
generation prompt appended), then tokenized with special tokens parsed and no
BOS added when the template already put it there.
"""
from __future__ import annotations

import ctypes
from typing import Sequence

import llama_cpp as L
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from .base import Tokenizer

__all__ = ["LlamaCppTokenizer"]


class LlamaCppTokenizer(Tokenizer):
    """Tokenizer of a loaded llama.cpp model (a ``ModelHandle``, kept alive by this object)."""

    def __init__(self, handle) -> None:
        self._handle = handle  # the vocab pointer lives inside the model it owns
        model = handle.ptr
        self._vocab = L.llama_model_get_vocab(model)
        self.n_vocab = int(L.llama_vocab_n_tokens(self._vocab))
        self.bos_id = int(L.llama_vocab_bos(self._vocab))
        self.eos_id = int(L.llama_vocab_eos(self._vocab))
        self._eog = {t for t in range(self.n_vocab) if L.llama_vocab_is_eog(self._vocab, t)}
        template = L.llama_model_chat_template(model, None)
        self.chat_template: str | None = template.decode("utf-8") if template else None
        self._formatter = None

    # ------------------------------------------------------------------ Tokenizer
    def encode(self, text: str, add_special: bool = False) -> list[int]:
        """Token ids; special-token text is parsed; ``add_special`` adds BOS if the model wants it."""
        return self._tokenize(text.encode("utf-8"), add_special)

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        """Text of ``ids`` (invalid UTF-8 at a token boundary is replaced)."""
        ids = [int(t) for t in ids]
        if not ids:
            return ""
        arr = (L.llama_token * len(ids))(*ids)
        size = max(64, 8 * len(ids))
        for _ in range(2):
            buf = ctypes.create_string_buffer(size)
            n = L.llama_detokenize(self._vocab, arr, len(ids), buf, size, False, not skip_special)
            if n >= 0:
                return buf.raw[:n].decode("utf-8", errors="replace")
            size = -n
        raise RuntimeError("llama_detokenize failed")

    def apply_chat_template(self, messages: list[dict]) -> list[int]:
        """Prompt ids for ``messages`` plus the assistant generation prompt."""
        if self.chat_template is None:
            raise ValueError("this GGUF has no tokenizer.chat_template")
        if self._formatter is None:
            self._formatter = Jinja2ChatFormatter(
                template=self.chat_template,
                eos_token=self.token_text(self.eos_id),
                bos_token=self.token_text(self.bos_id),
                add_generation_prompt=True,
                stop_token_ids=[self.eos_id],
            )
        result = self._formatter(messages=messages)
        return self._tokenize(result.prompt.encode("utf-8"), not result.added_special)

    @property
    def eos_token_ids(self) -> set[int]:
        """Every end-of-generation token of the vocabulary (EOS, EOT, ...)."""
        return set(self._eog)

    # ------------------------------------------------------------------ helpers
    def token_text(self, token: int) -> str:
        """The vocabulary text of one token ('' for -1)."""
        if token < 0:
            return ""
        return L.llama_vocab_get_text(self._vocab, token).decode("utf-8", errors="replace")

    def _tokenize(self, data: bytes, add_special: bool) -> list[int]:
        size = len(data) + 8
        for _ in range(2):
            buf = (L.llama_token * size)()
            n = L.llama_tokenize(self._vocab, data, len(data), buf, size, add_special, True)
            if n >= 0:
                return list(buf[:n])
            size = -n
        raise RuntimeError("llama_tokenize failed")
