"""Benchmark configurations: names -> runner objects that generate for one prompt and time it.

Names (one per configuration; the backend after ``@`` is the *family* whose plain decoding is
the speedup baseline):

    plain@llamacpp, plain@torch             verispec's backend with speculation off
    llama-cpp-python@llamacpp               llama-cpp-python's own create_chat_completion
    llama-cpp-python+pld@llamacpp           ... with LlamaPromptLookupDecoding as draft_model
    hf-generate@torch                       transformers `generate` (same GGUF, same dtype as verispec's torch runs)
    hf-generate+pld@torch                   ... with prompt_lookup_num_tokens
    hf-generate+assist@torch                ... with assistant_model = the draft model
    hf-generate+f32@torch                   ... in float32, the dtype transformers loads a GGUF in by default
    verispec:<verifier>:<drafter>:k<k>:g<gamma|auto>@<backend>
                                            e.g. verispec:block:model:k1:g4@llamacpp

Every runner shares one contract, `run(prompt, params, max_tokens, seed) -> Outcome`, timed
from the chat messages to the last token (prompt processing included, as a user sees it).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from ..cli_args import HEAD_DRAFTERS
from ..engine.build import EngineConfig
from ..sampling import SamplingParams

BASELINES = ("plain", "llama-cpp", "llama-cpp-pld", "hf", "hf-pld", "hf-assist", "hf-f32")
_BASELINE_NAMES = {"plain": "plain@{b}", "llama-cpp": "llama-cpp-python@llamacpp",
                   "llama-cpp-pld": "llama-cpp-python+pld@llamacpp", "hf": "hf-generate@torch",
                   "hf-pld": "hf-generate+pld@torch", "hf-assist": "hf-generate+assist@torch",
                   "hf-f32": "hf-generate+f32@torch"}
_VERISPEC = re.compile(r"verispec:([\w-]+):([\w+-]+):k(\d+):g(\d+|auto)@(llamacpp|torch)")
PLD_TOKENS = 10  # draft length of both prompt-lookup baselines (llama-cpp-python's default)


@dataclass
class Settings:
    """What every configuration shares: models, threads, context."""

    model: str | None = None  # target GGUF / HF dir; None = the embedded SmolLM2
    draft_model: str | None = None  # a path or a drafts.py spec (q4_0, trunc20, skip12-17)
    draft_head: str | None = None  # head / ngram+head drafters: a head file; None = the shipped one
    head_tree: int | None = EngineConfig.head_tree  # head / ngram+head drafters at T = 0: value tree nodes; 0 = chains
    head_quant: str | None = EngineConfig.head_quant  # head drafters: int4 / int8 / none; None = HeadDrafter's default
    copy_branch: int = EngineConfig.copy_branch  # ngram+head at T = 0: the copy branch's tokens; 0 = none
    n_threads: int | None = None
    n_ctx: int = 4096
    dtype: str | None = None  # torch configurations (verispec and generate alike); None = auto (bfloat16 where native)
    max_gamma: int = EngineConfig.max_gamma
    record_acceptance: bool = True  # keep root p, q per verify call for the optimal-gap analysis


@dataclass
class Outcome:
    tokens: int  # completion tokens
    seconds: float  # wall time of the generation
    stats: dict | None = None  # SpecStats.to_dict() (verispec runners)
    gap: dict | None = None  # GapSummary.to_dict() of this generation (verispec, recording on)
    text: str = ""
    prefill: float | None = None  # seconds until the first token could be drawn (the prompt's pass); None: unknown


@dataclass
class Runner:
    name: str
    family: str  # "llamacpp" | "torch": plain decoding on it is the speedup baseline
    system: str  # "plain" | "llama-cpp-python" | "hf-generate" | "verispec"
    meta: dict = field(default_factory=dict)

    def run(self, prompt: str, params: SamplingParams, max_tokens: int, seed: int) -> Outcome:
        raise NotImplementedError

    def close(self) -> None:
        pass


def verispec_name(verifier: str, drafter: str, k: int, gamma: int | None, backend: str) -> str:
    return f"verispec:{verifier}:{drafter}:k{k}:g{gamma or 'auto'}@{backend}"


def parse_name(name: str) -> dict:
    """A configuration name -> its fields (ValueError listing the grammar for anything else)."""
    m = _VERISPEC.fullmatch(name)
    if m:
        v, d, k, g, b = m.groups()
        return {"system": "verispec", "verifier": v, "drafter": d, "k": int(k),
                "gamma": None if g == "auto" else int(g), "family": b}
    for key, pattern in _BASELINE_NAMES.items():
        for b in ("llamacpp", "torch"):
            if name == pattern.format(b=b):
                return {"system": key, "family": name.rsplit("@", 1)[1]}
    raise ValueError(f"unknown configuration {name!r}; expected plain@<backend>, llama-cpp-python[+pld]@llamacpp, "
                     "hf-generate[+pld|+assist|+f32]@torch or verispec:<verifier>:<drafter>:k<k>:g<gamma|auto>@<backend>")


def expand(backends: list[str], baselines: list[str], verifiers: list[str], drafters: list[str],
           ks: list[int], gammas: list[int | None], temperature: float) -> list[str]:
    """The configuration names for a grid of flags.

    Baselines run on the backends that host them (llama-cpp-python on llamacpp, hf-generate on
    torch). verispec runs every verifier x drafter x k x gamma on every backend, except that
    single-draft rules (token, block, gumbel, greedy) run at k = 1 only and multi-draft rules at the
    k > 1 values (at k = 1 too if that is all that was asked). 'auto' resolves to greedy at
    temperature 0, else block (k = 1) or specinfer (k > 1), as the engine does.
    """
    from ..verify import get_verifier

    for b in backends:
        if b not in ("llamacpp", "torch"):
            raise ValueError(f"unknown backend {b!r}; choose llamacpp, torch")
    for x in baselines:
        if x not in BASELINES:
            raise ValueError(f"unknown baseline {x!r}; choose from {', '.join(BASELINES)} (or all / none)")
    if any(k < 1 for k in ks) or any(g is not None and g < 1 for g in gammas):
        raise ValueError("k and gamma must be >= 1")
    names = []
    for b in backends:
        names += [_BASELINE_NAMES[x].format(b=b) for x in baselines
                  if x == "plain" or (x.startswith("llama-cpp") and b == "llamacpp") or (x.startswith("hf") and b == "torch")]
    multi_ks = [k for k in ks if k > 1] or ks
    for b in backends:
        for v in verifiers:
            for k in ks:
                name = v if v != "auto" else ("greedy" if temperature == 0 else ("block" if k == 1 else "specinfer"))
                single = get_verifier(name).max_drafts == 1
                if (single and k != 1) or (not single and k not in multi_ks):
                    continue
                names += [verispec_name(name, d, k, g, b) for d in drafters for g in gammas]
    return list(dict.fromkeys(names))  # unique, in order


# ------------------------------------------------------------------ runners
class VerispecRunner(Runner):
    """verispec's Engine (plain when drafter is none); with an AcceptanceRecorder around the rule."""

    def __init__(self, name: str, fields: dict, s: Settings):
        from ..backends.derived import resolve_draft_model
        from ..engine.build import build_engine
        from ..engine.generate import Engine
        from ..verify import get_verifier
        from .optimal_gap import AcceptanceRecorder

        plain = fields["system"] == "plain"
        drafter = "none" if plain else fields["drafter"]
        draft_model = resolve_draft_model(s.draft_model, s.model) if drafter in ("model", "ngram+model") else None
        cfg = EngineConfig(backend=fields["family"], model=s.model, drafter=drafter, draft_model=draft_model,
                           verifier="auto" if plain else fields["verifier"], k=1 if plain else fields["k"],
                           gamma=None if plain else fields["gamma"], max_gamma=s.max_gamma,
                           n_threads=s.n_threads, n_ctx=s.n_ctx, draft_head=s.draft_head, head_tree=s.head_tree,
                           head_quant=s.head_quant, copy_branch=s.copy_branch,
                           dtype=s.dtype if fields["family"] == "torch" else None)
        eng = build_engine(cfg)
        import torch

        self._threads = torch.get_num_threads()  # what build_engine chose for this family; restored per run
        self.recorder = None
        if not plain and s.record_acceptance:
            self.recorder = AcceptanceRecorder(get_verifier(fields["verifier"]))
            eng = Engine(eng.backend, eng.drafter, self.recorder, eng.k, eng.controller)
        self.engine = eng
        super().__init__(name, fields["family"], "plain" if plain else "verispec",
                         {**fields, "draft_model": draft_model,
                          **({"draft_head": s.draft_head} if drafter in HEAD_DRAFTERS and s.draft_head else {}),
                          **({"head_tree": s.head_tree, "head_quant": s.head_quant}
                             if drafter in HEAD_DRAFTERS else {}),
                          **({"copy_branch": s.copy_branch} if drafter == "ngram+head" else {})})

    def run(self, prompt, params, max_tokens, seed):
        import torch

        from .optimal_gap import root_gap

        torch.set_num_threads(self._threads)  # another configuration's build may have changed it
        if self.recorder is not None:
            self.recorder.take()
        t0 = time.perf_counter()
        g = self.engine.generate([{"role": "user", "content": prompt}], params, max_tokens, seed=seed)
        dt = time.perf_counter() - t0
        gap = None
        if self.recorder is not None:  # off the timed path
            gap = root_gap(self.recorder.name, self.recorder.take()).to_dict()
        return Outcome(g.stats.emitted, dt, g.stats.to_dict(), gap, g.text, g.stats.time_prefill)

    def close(self):
        for be in (self.engine.backend, getattr(self.engine.drafter, "backend", None)):
            if be is not None and hasattr(be, "close"):
                be.close()


class LlamaCppPythonRunner(Runner):
    """llama-cpp-python's `Llama.create_chat_completion`, optionally with prompt lookup decoding."""

    def __init__(self, name: str, fields: dict, s: Settings):
        from llama_cpp import Llama

        from ..backends import default_model_path

        kw = {}
        if fields["system"] == "llama-cpp-pld":
            from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

            kw["draft_model"] = LlamaPromptLookupDecoding(num_pred_tokens=PLD_TOKENS)
            # with a draft model llama-cpp-python keeps every logit row, and a prompt longer than n_batch (512)
            # fails there ("could not broadcast input array ..."); one batch for the whole context avoids it
            kw["n_batch"] = s.n_ctx
        from ..backends.base import usable_cpus

        threads = s.n_threads or usable_cpus()  # the same as verispec's backend (llama-cpp-python: half)
        self.llama = Llama(model_path=s.model or default_model_path(), n_ctx=s.n_ctx,
                           n_threads=threads, n_threads_batch=threads, verbose=False, **kw)
        super().__init__(name, "llamacpp", "llama-cpp-python", dict(fields))

    def run(self, prompt, params, max_tokens, seed):
        first: list[float] = []

        def mark(input_ids, scores):  # called before every draw, the first time right after the prompt's pass
            if not first:
                first.append(time.perf_counter())
            return scores  # unchanged: the same law and the same text as without it

        t0 = time.perf_counter()
        r = self.llama.create_chat_completion(  # every sampler but the user's switched off: the same law
            [{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=params.temperature,
            top_k=params.top_k or 0, top_p=params.top_p, min_p=params.min_p, repeat_penalty=1.0, seed=seed,
            logits_processor=[mark])
        dt = time.perf_counter() - t0
        return Outcome(r["usage"]["completion_tokens"], dt, text=r["choices"][0]["message"]["content"] or "",
                       prefill=first[0] - t0 if first else None)

    def close(self):
        self.llama.close()


class HFGenerateRunner(Runner):
    """transformers `model.generate` on the torch backend's model: plain, prompt lookup, or assisted; in
    verispec's torch dtype, or (hf-f32) in float32, what transformers gives a user who loads the GGUF."""

    def __init__(self, name: str, fields: dict, s: Settings):
        from ..backends import load_backend
        from ..backends.base import usable_cpus
        from ..backends.derived import resolve_draft_model

        self._threads = s.n_threads or usable_cpus()  # as verispec's torch runs
        dtype = "float32" if fields["system"] == "hf-f32" else s.dtype or "auto"
        self.backend = load_backend("torch", s.model, dtype=dtype, lean=False)  # generate runs the HF model
        self.kw: dict = {}
        if fields["system"] == "hf-pld":
            self.kw["prompt_lookup_num_tokens"] = PLD_TOKENS
        elif fields["system"] == "hf-assist":
            if not s.draft_model:
                raise ValueError("hf-generate+assist needs --draft-model (a path or q4_0 / truncL / skipA-B)")
            self.kw["assistant_model"] = load_backend("torch", resolve_draft_model(s.draft_model, s.model),
                                                      dtype=s.dtype or "auto", lean=False).model
        super().__init__(name, "torch", "hf-generate", dict(fields))

    def run(self, prompt, params, max_tokens, seed):
        import torch

        tok = self.backend.tokenizer
        ids = torch.tensor([tok.apply_chat_template([{"role": "user", "content": prompt}])])  # [1, T]
        sample = {"do_sample": False} if params.greedy else {
            "do_sample": True, "temperature": params.temperature, "top_k": params.top_k or 0,
            "top_p": params.top_p, "min_p": params.min_p or None}
        eos = sorted(tok.eos_token_ids)
        torch.set_num_threads(self._threads)
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.backend.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                              eos_token_id=eos, pad_token_id=eos[0], **sample, **self.kw)
        dt = time.perf_counter() - t0
        new = out[0, ids.shape[1]:].tolist()
        n = next((i for i, t in enumerate(new) if t in eos), len(new))  # tokens before the first EOS
        return Outcome(n, dt, text=tok.decode(new[:n], skip_special=True))


def build_runner(name: str, s: Settings) -> Runner:
    """Load the models of one configuration (shared files are mmapped by llama.cpp, not copied)."""
    fields = parse_name(name)
    system = fields["system"]
    if system in ("plain", "verispec"):
        return VerispecRunner(name, fields, s)
    if system.startswith("llama-cpp"):
        return LlamaCppPythonRunner(name, fields, s)
    return HFGenerateRunner(name, fields, s)
