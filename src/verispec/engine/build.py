"""Assemble an Engine from names: backend, model, drafter, verifier (what the CLI and server use)."""
from __future__ import annotations

from dataclasses import dataclass

from .controller import Controller, CostCurve
from .generate import Engine

DRAFTERS = ("ngram", "model", "early-exit", "none")


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
    max_gamma: int = 12
    n_threads: int | None = None
    n_ctx: int = 4096


def build_engine(cfg: EngineConfig) -> Engine:
    from ..backends import load_backend
    from ..verify import get_verifier

    if cfg.drafter not in DRAFTERS:
        raise ValueError(f"unknown drafter {cfg.drafter!r}; choose from {', '.join(DRAFTERS)}")
    if cfg.verifier != "auto":
        get_verifier(cfg.verifier)  # a clear error for an unknown name, before loading models
    if cfg.gamma is not None and cfg.gamma < 1:
        raise ValueError(f"gamma must be >= 1, got {cfg.gamma}")
    kw = {"n_ctx": cfg.n_ctx}
    if cfg.n_threads:
        kw["n_threads"] = cfg.n_threads
    from ..backends import default_model_path

    if cfg.model is not None and cfg.model_format is not None:
        raise ValueError("--model-format applies to the embedded model only; do not combine it with --model")
    model = cfg.model if cfg.model is not None else default_model_path(cfg.model_format)
    if cfg.backend == "llamacpp":
        # torch only handles [N + 1, V] vectors here: its thread pool costs more to wake than the
        # work (1.3 ms against 0.15 ms per step on 2 busy cores), so run it on the calling thread.
        import torch

        torch.set_num_threads(1)
    backend = load_backend(cfg.backend, model, **(kw if cfg.backend == "llamacpp" else {}))
    drafter = None
    if cfg.drafter == "ngram":
        from ..draft.ngram import NGramDrafter

        drafter = NGramDrafter()
    elif cfg.drafter == "model":
        from ..draft.model import ModelDrafter

        if not cfg.draft_model:
            raise ValueError("--drafter model needs --draft-model PATH (a GGUF file or a Hugging Face directory)")
        dkind = "llamacpp" if cfg.draft_model.endswith(".gguf") and cfg.backend == "llamacpp" else cfg.backend
        drafter = ModelDrafter(load_backend(dkind, cfg.draft_model, **(kw if dkind == "llamacpp" else {})))
        drafter.check_compatible(backend)
    elif cfg.drafter == "early-exit":
        from ..draft.early_exit import EarlyExitDrafter

        drafter = EarlyExitDrafter(backend, layers=cfg.early_exit_layers)
    controller = None
    if drafter is not None:
        curve = CostCurve.cached(backend, model, k_max=cfg.max_gamma + 1)
        controller = Controller(curve, max_gamma=cfg.max_gamma, fixed_gamma=cfg.gamma)
    return Engine(backend, drafter, cfg.verifier, cfg.k, controller)
