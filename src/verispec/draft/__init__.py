"""Drafters behind one contract: `propose(req, budget) -> DraftTree | None` and `observe(req, tree, result)`.

| file | concern |
|---|---|
| `base.py` | `DraftRequest`, the `Drafter` contract, request checks |
| `kinds.py` | `ChildSampler`: how a draft token is drawn per kind with the production noise |
| `ngram.py` | `NGramDrafter`: prompt lookup over the context (no model) |
| `compat.py` | `check_vocab`: draft and target must share the tokenizer |
| `model.py` | `ModelDrafter`: an independent small model on any Backend |
| `early_exit.py` | `EarlyExitDrafter`: the target's first L layers (torch) |
| `hybrid.py` | `LookupThenModel`: prompt lookup, else a draft model or head |
| `head.py` | `HeadDrafter`: an EAGLE-style head on the target's own features (torch) |
| `head_model.py` | `DraftHead`, `HeadCache`: the head and its key / value rows |
| `value_tree.py` | `TreeShape`, `grow_tree`: EAGLE-2's tree of the nodes a calibrated drafter rates likeliest |
| `head_data.py`, `head_train.py` | `verispec train-head`: the target's answers, the head's training |
"""
from .base import Drafter, DraftRequest, accepted_context
from .compat import check_vocab
from .early_exit import EarlyExitDrafter
from .head import HeadDrafter
from .hybrid import LookupThenModel
from .kinds import ChildSampler
from .model import ModelDrafter
from .ngram import NGramDrafter

__all__ = ["DraftRequest", "Drafter", "accepted_context", "check_vocab", "ChildSampler", "NGramDrafter",
           "ModelDrafter", "EarlyExitDrafter", "LookupThenModel", "HeadDrafter"]
