"""End-to-end speed on the Spec-Bench dev split: verispec vs plain decoding, in the same process.

For every prompt (first turn, chat template), interleaved so machine noise hits every
configuration alike:
  * llama-cpp-python's own `create_chat_completion` on the same GGUF (what a CPU user runs),
  * verispec plain decoding on the same backend (speculation off),
  * verispec speculative decoding (drafter + verifier, the controller choosing gamma).
tokens/s per category is total completion tokens / total seconds; speedups are ratios in the
same run. Usage: python -m verispec.bench.speed --temperature 0 --max-tokens 128 [--limit N]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

from tqdm import tqdm

DEV = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "spec_bench" / "dev.jsonl"


def load_prompts(path: str | Path = DEV, limit: int | None = None, per_category: int | None = None) -> list[dict]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if per_category:
        seen: dict[str, int] = defaultdict(int)
        rows = [r for r in rows if (seen.__setitem__(r["category"], seen[r["category"]] + 1) or True)
                and seen[r["category"]] <= per_category]
    return rows[:limit] if limit else rows


def run(args) -> dict:
    from llama_cpp import Llama

    from ..backends import default_model_path
    from ..engine.build import EngineConfig, build_engine
    from ..sampling import SamplingParams

    model = args.model or default_model_path()
    params = SamplingParams(args.temperature, args.top_k, args.top_p)
    cfg = EngineConfig(model=args.model, drafter=args.drafter, verifier=args.verifier, k=args.k, gamma=args.gamma,
                       max_gamma=args.max_gamma, n_threads=args.threads, n_ctx=args.n_ctx)
    spec = build_engine(cfg)
    plain = build_engine(EngineConfig(model=args.model, drafter="none", n_threads=args.threads, n_ctx=args.n_ctx))
    llama = Llama(model_path=model, n_ctx=args.n_ctx, n_threads=args.threads or None, verbose=False)
    rows = load_prompts(args.data, args.limit, args.per_category)
    agg: dict = defaultdict(lambda: defaultdict(lambda: [0, 0.0]))  # category -> config -> [tokens, seconds]
    accept: dict = defaultdict(lambda: [0, 0])  # category -> [emitted, target calls]
    for i, row in enumerate(tqdm(rows, desc="speed", disable=args.quiet)):
        msgs = [{"role": "user", "content": row["turns"][0]}]
        order = ["llama-cpp", "plain", "spec"]
        order = order[i % 3:] + order[: i % 3]  # rotate to spread drift
        for name in order:
            t0 = time.perf_counter()
            if name == "llama-cpp":
                r = llama.create_chat_completion(msgs, max_tokens=args.max_tokens, temperature=args.temperature,
                                                 top_k=args.top_k or 0, top_p=args.top_p, seed=args.seed)
                n = r["usage"]["completion_tokens"]
            else:
                eng = spec if name == "spec" else plain
                g = eng.generate(msgs, params, args.max_tokens, seed=args.seed)
                n = g.stats.emitted
                if name == "spec":
                    accept[row["category"]][0] += g.stats.emitted
                    accept[row["category"]][1] += g.stats.target_calls
            dt = time.perf_counter() - t0
            agg[row["category"]][name][0] += n
            agg[row["category"]][name][1] += dt
            agg["ALL"][name][0] += n
            agg["ALL"][name][1] += dt
    table = {}
    for cat, d in agg.items():
        tps = {k: v[0] / v[1] if v[1] else 0.0 for k, v in d.items()}
        em, calls = (sum(a[0] for c, a in accept.items() if c != "ALL"), sum(a[1] for c, a in accept.items() if c != "ALL")) \
            if cat == "ALL" else accept[cat]
        table[cat] = {**{f"{k} tok/s": v for k, v in tps.items()},
                      "spec / llama-cpp": tps.get("spec", 0) / tps["llama-cpp"] if tps.get("llama-cpp") else 0,
                      "spec / plain": tps.get("spec", 0) / tps["plain"] if tps.get("plain") else 0,
                      "mean acceptance length": em / calls if calls else 0.0}
    return {"config": vars(args), "table": table}


def format_table(res: dict) -> str:
    cols = ["llama-cpp tok/s", "plain tok/s", "spec tok/s", "spec / llama-cpp", "spec / plain", "mean acceptance length"]
    lines = ["| category | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    cats = sorted(k for k in res["table"] if k != "ALL") + ["ALL"]
    for c in cats:
        r = res["table"][c]
        lines.append(f"| {c} | " + " | ".join(f"{r.get(k, 0):.2f}" for k in cols) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="verispec bench speed", description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DEV))
    ap.add_argument("--model", default=None)
    ap.add_argument("--drafter", default="ngram")
    ap.add_argument("--verifier", default="auto")
    ap.add_argument("-k", type=int, default=1)
    ap.add_argument("--gamma", type=int, default=None)
    ap.add_argument("--max-gamma", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--per-category", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--out", default=None, help="write the JSON here")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    res = run(args)
    print(format_table(res))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
