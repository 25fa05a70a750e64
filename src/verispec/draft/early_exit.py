"""Self-speculation: draft with the target's own first L decoder layers (torch backend only).

LayerSkip (Elhoushi et al. 2024, arXiv 2404.16710) drafts by exiting the target after its
first L layers (final norm + LM head applied there); Draft & Verify (Zhang et al. 2023,
arXiv 2309.08168) skips intermediate layers. Both need no second model: the draft shares the
target's weights. Here the truncated model is a *shallow* copy of the Hugging Face module (same
parameter tensors, no copy) whose decoder layer list and config stop after layer L, so the
model's own forward (embeddings, rotary positions, masks, the first L layers, final norm,
lm_head) runs unchanged. It sits in a second `TorchBackend` with its own KV cache, and the
drafting itself is `ModelDrafter`'s (chains with score / commit, rollback by truncate).

Without early-exit training (LayerSkip's layer dropout + early-exit loss) the first layers
of an ordinary model draft poorly; the point here is the mechanism, exact and reusable.
"""
from __future__ import annotations

import copy

from ..backends.base import Backend
from ..checks import int_at_least
from .model import ModelDrafter


class EarlyExitDrafter(ModelDrafter):
    """Drafts with the first `layers` decoder layers of a `TorchBackend` target.

    Args:
        backend: the target, a `verispec.backends.torch_hf.TorchBackend` (its weights are shared).
        layers: decoder layers to keep, 1 <= layers <= the model's layer count.
    """

    def __init__(self, backend: Backend, layers: int):
        super().__init__(truncated_backend(backend, layers))
        self.layers = layers


def truncated_backend(backend: Backend, layers: int) -> Backend:
    """A second TorchBackend running the first `layers` layers of `backend`'s model, own cache."""
    try:
        from ..backends.torch_cache import new_cache
        from ..backends.torch_hf import TorchBackend
    except ImportError as exc:  # transformers missing: then it cannot be a TorchBackend either
        raise ValueError(f"early-exit drafting needs the torch backend ({exc})") from None
    if not isinstance(backend, TorchBackend):
        raise ValueError(f"early-exit drafting needs a torch backend (TorchBackend), got {type(backend).__name__}")
    draft = copy.copy(backend)
    Backend.__init__(draft)  # its own committed state: nothing, until the drafter's first reset
    draft.model = truncated_model(backend.model, layers)
    draft._cache = new_cache()  # its own KV cache (the copy would share the target's)
    if getattr(backend, "_lean", None) is not None:
        from ..backends.torch_llama import LeanLlama

        draft._lean = LeanLlama(draft.model, draft.n_ctx)  # likewise: its own static cache
    return draft


def truncated_model(model, layers: int):
    """Shallow copy of a HF causal LM that runs only decoder layers [0, layers) (weights shared).

    Works for models laid out as `<ForCausalLM>.<base_model_prefix>.layers` (Llama, Mistral,
    Qwen2/3, Gemma, Phi3, SmolLM, ...) whose forward loops over `layers[:config.num_hidden_layers]`
    or over the whole list.
    """
    base = model.base_model
    stack = getattr(base, "layers", None)
    if stack is None or base is model:
        raise ValueError(f"{type(model).__name__} has no <base_model>.layers list: early exit is not supported")
    n = len(stack)
    if not int_at_least(layers, 1) or layers > n:
        raise ValueError(f"layers must be an int in [1, {n}] (the model has {n} decoder layers), got {layers!r}")
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = layers
    if getattr(config, "layer_types", None):
        config.layer_types = list(config.layer_types)[:layers]
    short_base = _shallow(base)
    short_base.layers = type(stack)(list(stack)[:layers])  # same layer modules, shorter list
    short_base.config = config
    top = _shallow(model)
    setattr(top, model.base_model_prefix, short_base)
    top.config = config
    return top


def _shallow(module):
    """A copy of an nn.Module sharing parameters and submodules, with its own submodule table."""
    out = copy.copy(module)
    out._modules = type(module._modules)(module._modules)
    return out
