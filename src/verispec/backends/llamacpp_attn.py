"""Flash attention or not: which of llama.cpp's two CPU attention paths is cheaper for a model on this machine.

llama.cpp turns flash attention on for the CPU by default. Its kernel walks the context once a query row, the
other path multiplies all rows at once, and which is cheaper depends on the CPU (2 cores, SmolLM2-135M BF16, a
context of 200 tokens):

- an AVX2 EPYC (Zen 3): a step ~4% cheaper with flash attention (docs/speed.md §26);
- an AVX-512 Xeon with AMX: a step 8% dearer with it, 4 rows 2.05 steps against 1.76 (§31).

So `LlamaCppBackend` measures both once per model, thread count and CPU, short decode passes after a short
prompt (`measure`), and keeps the choice in the cache folder next to the cost curves. The prompts torch prefills
are long, and their decoding takes flash attention off whatever this says (`LlamaCppBackend`'s ``flash_attn``).
"""
from __future__ import annotations

import hashlib
import json
import time

import llama_cpp as L

from ..cache import cache_dir, file_digest
from .base import cpu_key
from .llamacpp_api import KVMemory, TokenBatch, decode, new_context

__all__ = ["flash_attn_choice", "measure"]

CONTEXT = 192  # tokens of prompt before the timed passes: a short prompt and some answer
ROWS = (1, 4)  # a plain step and a short verification pass, weighed alike


def measure(model, n_threads: int, reps: int = 7) -> dict[bool, float]:
    """{flash_attn: seconds of one pass of each size in `ROWS`, summed (medians of `reps`)} after a `CONTEXT`-token
    prompt, the two settings interleaved so that a machine's drift hits both alike."""
    ctxs, times = {}, {}
    batch = TokenBatch(CONTEXT + max(ROWS), 1)
    try:
        for fa in (True, False):
            ctxs[fa] = new_context(model, n_ctx=CONTEXT + 64, n_batch=CONTEXT + max(ROWS), n_seq_max=1,
                                   n_threads=n_threads, flash_attn=fa)
            batch.fill([1 + i % 100 for i in range(CONTEXT)], range(CONTEXT), None, outputs=False)
            decode(ctxs[fa], batch)
        mems = {fa: KVMemory(c) for fa, c in ctxs.items()}
        samples = {(fa, n): [] for fa in ctxs for n in ROWS}
        for r in range(reps + 1):  # the first round warms up
            for fa in ((True, False) if r % 2 else (False, True)):
                for n in ROWS:
                    batch.fill([7 + i for i in range(n)], range(CONTEXT, CONTEXT + n), None, outputs=True)
                    t0 = time.perf_counter()
                    decode(ctxs[fa], batch)
                    if r:
                        samples[fa, n].append(time.perf_counter() - t0)
                    mems[fa].rm(-1, CONTEXT)
        for (fa, n), ts in samples.items():
            times[fa] = times.get(fa, 0.0) + sorted(ts)[len(ts) // 2]
    finally:
        batch.close()
        for c in ctxs.values():
            L.llama_free(c)
    return times


def flash_attn_choice(model, path: str, n_threads: int) -> bool:
    """Whether flash attention is the cheaper path for the model at `path` (loaded: ``model``) with `n_threads`
    threads on this CPU: read from the cache folder, measured (`measure`, ~1 s) and written there the first time."""
    key = f"v2|{file_digest(path)}|{n_threads}|{cpu_key()}"
    file = cache_dir() / f"attn-{hashlib.sha1(key.encode()).hexdigest()[:16]}.json"
    try:
        return bool(json.loads(file.read_text())["flash_attn"])
    except (OSError, ValueError, KeyError):
        pass
    times = measure(model, n_threads)
    choice = times[True] < times[False]
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        seconds = {str(k): v for k, v in times.items()}
        file.write_text(json.dumps({"key": key, "flash_attn": choice, "seconds": seconds}))
    except OSError:
        pass
    return choice
