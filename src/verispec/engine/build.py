"""Assemble an Engine from names: backend, model, drafter, verifier (what the CLI and server use)."""
from __future__ import annotations

from dataclasses import dataclass

from ..checks import int_at_least
from ..cli_args import DRAFTERS, HEAD_DRAFTERS, MAX_GAMMA
from ..draft.value_tree import TreeShape
from .controller import Controller, CostCurve
from .generate import Engine


@dataclass
class EngineConfig:
    backend: str = "llamacpp"
    model: str | None = None  # None = the embedded SmolLM2-135M-Instruct GGUF
    model_format: str | None = None  # the embedded model's format: bf16 (default), f16, q4_1 (shipped)
    drafter: str = "ngram"
    draft_model: str | None = None
    early_exit_layers: int = 8
    verifier: str = "auto"
    k: int = 1
    gamma: int | None = None  # fixed draft length; None = the controller decides
    max_gamma: int = MAX_GAMMA
    n_threads: int | None = None
    n_ctx: int = 4096
    flash_attn: bool | None = None  # llama.cpp: None = the cheaper path here, measured once (LlamaCppBackend)
    torch_prefill: int | None = None  # llama.cpp: prompts from this many tokens prefilled by torch; 0 = never, None = auto
    dtype: str | None = None  # torch weights / compute dtype; None = "auto" (bfloat16 where the CPU has it natively)
    draft_backend: str | None = None  # None = llamacpp for a GGUF draft model (its fast runtime), else the target's
    draft_window: int | None = 256  # the draft model sees the context's last 256-512 tokens (None: all of it)
    draft_head: str | None = None  # --drafter head: a trained DraftHead file; None = the shipped one (embedded model)
    head_confidence: float | None = 0.15  # HeadDrafter's default: greedy chains stop below this product of top-1 probs
    # HeadDrafter at temperature 0: a value tree of up to this many nodes (0 / None = chains)
    head_tree: int | None = TreeShape.nodes
    head_quant: str | None = None  # HeadDrafter: int4 / int8 / none weights; None = HeadDrafter's default (by CPU)
    copy_branch: int = 4  # ngram+head at temperature 0: the copy branch's tokens (`LookupThenModel`); 0 = none


def build_engine(cfg: EngineConfig) -> Engine:
    from ..backends import load_backend
    from ..backends.base import usable_cpus
    from ..verify import get_verifier

    if cfg.drafter not in DRAFTERS:
        raise ValueError(f"unknown drafter {cfg.drafter!r}; choose from {', '.join(DRAFTERS)}")
    if cfg.verifier != "auto":
        get_verifier(cfg.verifier)  # a clear error for an unknown name, before loading models
    if cfg.drafter in HEAD_DRAFTERS and cfg.backend != "torch":
        raise ValueError(f"--drafter {cfg.drafter} reads the target's hidden states: it needs --backend torch")
    if cfg.gamma is not None and not int_at_least(cfg.gamma, 1):
        raise ValueError(f"gamma must be an int >= 1, or None for the controller's choice; got {cfg.gamma!r}")
    if not int_at_least(cfg.max_gamma, 1):
        raise ValueError(f"max_gamma must be an int >= 1, got {cfg.max_gamma!r}")
    from ..backends import default_model_path

    if cfg.model is not None and cfg.model_format is not None:
        raise ValueError("--model-format applies to the embedded model only; do not combine it with --model")
    if cfg.dtype is not None and cfg.backend != "torch":
        raise ValueError("--dtype applies to the torch backend only (llama.cpp runs the GGUF's own types)")
    if cfg.torch_prefill is not None and cfg.backend != "llamacpp":
        raise ValueError("--torch-prefill applies to the llama.cpp backend only (torch prefills its own prompts)")
    model = cfg.model if cfg.model is not None else default_model_path(cfg.model_format)
    import torch

    # a torch target computes with torch's threads; beside llama.cpp torch only handles [N + 1, V]
    # vectors, and its thread pool costs more to wake than the work (1.3 ms against 0.15 ms per step
    # on 2 busy cores), so it runs on the calling thread
    torch.set_num_threads((cfg.n_threads or usable_cpus()) if cfg.backend == "torch" else 1)
    backend = load_backend(cfg.backend, model, **_backend_kw(cfg.backend, cfg))
    drafter = None
    if cfg.drafter == "ngram":
        from ..draft.ngram import NGramDrafter

        drafter = NGramDrafter()
    elif cfg.drafter in ("model", "ngram+model"):
        from ..backends.derived import resolve_draft_model
        from ..draft.model import ModelDrafter

        if not cfg.draft_model:
            raise ValueError(f"--drafter {cfg.drafter} needs --draft-model (a GGUF file, a Hugging Face directory, "
                             "or a copy of the target: q4_0, truncL, skipA-B)")
        path = resolve_draft_model(cfg.draft_model, model)
        dkind = cfg.draft_backend or ("llamacpp" if _gguf(path) else cfg.backend)
        drafter = ModelDrafter(load_backend(dkind, path, **_backend_kw(dkind, cfg, target=False)), window=cfg.draft_window)
        drafter.check_compatible(backend)
    elif cfg.drafter in HEAD_DRAFTERS:
        from ..draft.head import HeadDrafter

        if cfg.head_tree is not None and (not isinstance(cfg.head_tree, int) or cfg.head_tree < 0):
            raise ValueError(f"head_tree must be an int >= 0 (0: chains), got {cfg.head_tree!r}")
        tree = TreeShape(nodes=cfg.head_tree) if cfg.head_tree else None
        drafter = HeadDrafter(backend, cfg.draft_head, confidence=cfg.head_confidence, tree=tree, quant=cfg.head_quant)
    elif cfg.drafter == "early-exit":
        from ..draft.early_exit import EarlyExitDrafter

        drafter = EarlyExitDrafter(backend, layers=cfg.early_exit_layers)
    if cfg.drafter.startswith("ngram+"):  # prompt lookup first, the model drafter built above elsewhere
        from ..draft.hybrid import LookupThenModel
        from ..draft.ngram import NGramDrafter

        if not int_at_least(cfg.copy_branch, 0):
            raise ValueError(f"copy_branch must be an int >= 0 (0: none), got {cfg.copy_branch!r}")
        copy = NGramDrafter(max_ngram=1, min_ngram=1) if cfg.drafter == "ngram+head" and cfg.copy_branch else None
        drafter = LookupThenModel(NGramDrafter(), drafter, copy, cfg.copy_branch)
    controller = None
    if drafter is not None:
        curve = CostCurve.cached(backend, model, k_max=cfg.max_gamma + 1)
        controller = Controller(curve, max_gamma=cfg.max_gamma, fixed_gamma=cfg.gamma)
    return Engine(backend, drafter, cfg.verifier, cfg.k, controller)


def _gguf(path: str | None) -> bool:
    return bool(path) and str(path).lower().endswith(".gguf")


def _backend_kw(kind: str, cfg: EngineConfig, target: bool = True) -> dict:
    """Constructor keywords for a backend of this kind from the config (``target``: the target's, not a draft model's)."""
    if kind == "torch":
        return {"dtype": cfg.dtype or "auto"}
    kw = {"n_ctx": cfg.n_ctx}
    if cfg.flash_attn is not None:
        kw["flash_attn"] = cfg.flash_attn
    if cfg.torch_prefill is not None and target:  # a draft model's backend decides for itself
        kw["torch_prefill"] = cfg.torch_prefill
    if cfg.n_threads:
        kw["n_threads"] = cfg.n_threads
    return kw

