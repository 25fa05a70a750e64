"""From raw results to figures: per configuration and category, and the JSON / Markdown reports.

Figures (per configuration, per category and ``ALL``):
* tok/s          total completion tokens / total seconds (prompt processing included);
* speedup        tok/s over plain decoding on the same backend family (``plain@<family>``), with its
  90% interval by a paired bootstrap over the prompts (``speedup_ci``, intervals.py);
* decode speedup the same with each prompt's prefill left out (``decode_tok_s``: tokens / (seconds - the
  prefill's seconds)), what decoding itself gains, as vLLM's time per output token separates it from the time
  to the first one (llama-cpp-python: until its first draw, timed by a logits processor that changes nothing);
  None for a system that does not report its prefill (transformers' ``generate``);
* matched speedup the same at matched lengths (`intervals.matched_lengths`: every run timed at the mean length of
  its prompt and seed's runs from its own prefill time and step rate), what the speed is when the sampled texts'
  lengths differ; None where either system does not report its prefill;
* mean acceptance length (MAL, block efficiency)  emitted tokens / target forward passes, the
  bonus / recovered token counted (the convention of vLLM and Spec-Bench); 1.0 = plain decoding;
* vs token       MAL relative to the ``token`` rule with the same drafter, gamma and backend;
* per-position acceptance  P(draft position d accepted | reached), summed over requests;
* time split     draft / target / verify seconds as fractions of verispec's total;
* root acceptance  achieved / expected / optimal first-position acceptance (optimal_gap.py).
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from .configs import parse_name
from .intervals import format_interval, matched_lengths, rate, speedup_interval
from .optimal_gap import GapSummary

ALL = "ALL"


def _sum_positions(acc: list[int], add: list[int]) -> list[int]:
    out = list(acc) + [0] * max(0, len(add) - len(acc))
    for i, v in enumerate(add):
        out[i] += v
    return out


def _mal_se(acc: list[int], tried: list[int]) -> float | None:
    """Standard error of the mean acceptance length from the per-position counts.

    acc[d - 1] counts the verified drafts with tau >= d, tried[0] the verified drafts n, so
    E tau = sum_d acc / n and E tau^2 = sum_d (2d - 1) acc / n; SE = sd(tau) / sqrt(n), iterations
    treated as independent (an underestimate when consecutive iterations are correlated).
    """
    n = tried[0] if tried else 0
    if n < 2:
        return None
    m1 = sum(acc) / n
    m2 = sum((2 * d + 1) * a for d, a in enumerate(acc)) / n
    return max(m2 - m1 * m1, 0.0) ** 0.5 / n ** 0.5


def aggregate(raw: dict) -> dict:
    """``{config: {category: figures}}`` (categories sorted, then ``ALL``) from `runner.run_bench`'s output."""
    sums: dict = defaultdict(lambda: defaultdict(lambda: {
        "runs": 0, "tokens": 0, "seconds": 0.0, "emitted": 0, "eos": 0, "target_calls": 0, "accepted": 0,
        "draft_tokens": 0, "tried": [], "acc": [], "time_draft": 0.0, "time_target": 0.0, "time_verify": 0.0,
        "time_total": 0.0, "gap": GapSummary(), "per": {}, "decode_per": {}}))
    for r in raw["results"]:
        for cat in (r["category"], ALL):
            s = sums[r["config"]][cat]
            s["runs"] += 1
            s["tokens"] += r["tokens"]
            s["seconds"] += r["seconds"]
            _pool(s["per"], r["id"], r["tokens"], r["seconds"])  # paired with other configurations by prompt
            st = r.get("stats")
            if st:
                for key in ("emitted", "target_calls", "accepted", "draft_tokens", "time_draft", "time_target",
                            "time_verify", "time_total"):
                    s[key] += st[key]
                s["eos"] += st.get("eos", 0)  # the end-of-sequence token: generated, not emitted
                s["tried"] = _sum_positions(s["tried"], st["position_tried"])
                s["acc"] = _sum_positions(s["acc"], st["position_accepted"])
            if _prefill(r) is not None:
                _pool(s["decode_per"], r["id"], r["tokens"], r["seconds"] - _prefill(r))
            if r.get("gap"):
                s["gap"].add(GapSummary.from_dict(r["gap"]))
    table: dict = {}
    for cfg, cats in sums.items():
        table[cfg] = {}
        for cat in sorted(c for c in cats if c != ALL) + [ALL]:
            s = cats[cat]
            t = s["time_total"]
            decode_s = sum(sec for _, sec in s["decode_per"].values())
            whole = len(s["decode_per"]) == len(s["per"]) and decode_s > 0  # a prompt without a prefill time: none
            table[cfg][cat] = {
                "prompts": len(s["per"]), "runs": s["runs"], "tokens": s["tokens"], "seconds": s["seconds"],
                "tok_s": s["tokens"] / s["seconds"] if s["seconds"] else 0.0,
                "decode_tok_s": s["tokens"] / decode_s if whole else None,
                "mal": (s["emitted"] + s["eos"]) / s["target_calls"] if s["target_calls"] else None,
                "mal_se": _mal_se(s["acc"], s["tried"]),
                "acceptance_rate": s["accepted"] / s["draft_tokens"] if s["draft_tokens"] else None,
                "per_position": [a / n if n else 0.0 for a, n in zip(s["acc"], s["tried"])],
                "position_tried": s["tried"],
                "time_split": {k: s[f"time_{k}"] / t for k in ("draft", "target", "verify")} if t else None,
                "root": s["gap"].to_dict() if s["gap"].calls else None,
            }
    _relative(table, sums, _matched(raw["results"]))
    return table


def _pool(per: dict, pid, tokens: int, seconds: float) -> None:
    """A prompt's samples pooled: the bootstrap resamples prompts, not runs."""
    n, t = per.get(pid, (0, 0.0))
    per[pid] = (n + tokens, t + seconds)


def _prefill(r: dict) -> float | None:
    """A run's prefill seconds: its ``prefill`` (verispec: the prompt's pass; llama-cpp-python: until its first
    draw), else its stats' ``time_prefill`` (files written before ``prefill`` was), else None (generate)."""
    return r["prefill"] if "prefill" in r else (r.get("stats") or {}).get("time_prefill")


def _matched(results: list[dict]) -> dict:
    """category -> config -> {prompt: (tokens, seconds)} at matched lengths, from the runs whose system reports its
    prefill (the time to the first token there)."""
    runs = [{"prompt": r["id"], "seed": r.get("seed", 0), "category": r["category"], "config": r["config"],
             "tokens": r["tokens"], "seconds": r["seconds"], "first": _prefill(r)}
            for r in results if _prefill(r) is not None]
    return matched_lengths(runs)


def _relative(table: dict, sums: dict, matched: dict) -> None:
    """Add speedup (vs plain@family) with its interval over the prompts (`sums[cfg][cat]["per"]`: prompt ->
    (tokens, seconds)), the same at matched lengths (`matched`, `_matched`), and vs_token (MAL vs the token rule,
    same drafter/gamma/backend)."""
    for cfg, cats in table.items():
        f = parse_name(cfg)
        plain_cfg = f"plain@{f['family']}"
        plain = table.get(plain_cfg)
        token = None
        if f["system"] == "verispec":
            token = table.get(f"verispec:token:{f['drafter']}:k1:g{f['gamma'] or 'auto'}@{f['family']}")
        for cat, row in cats.items():
            base = plain.get(cat) if plain else None
            row["speedup"] = row["tok_s"] / base["tok_s"] if base and base["tok_s"] else None
            row["speedup_ci"] = speedup_interval(sums[cfg][cat]["per"], sums[plain_cfg][cat]["per"]) \
                if row["speedup"] is not None and cfg != plain_cfg else None
            row["decode_speedup"] = row["decode_tok_s"] / base["decode_tok_s"] \
                if base and row["decode_tok_s"] and base["decode_tok_s"] else None
            row["decode_speedup_ci"] = speedup_interval(sums[cfg][cat]["decode_per"], sums[plain_cfg][cat]["decode_per"]) \
                if row["decode_speedup"] is not None and cfg != plain_cfg else None
            mine, theirs = matched.get(cat, {}).get(cfg), matched.get(cat, {}).get(plain_cfg)
            whole = None not in (mine, theirs, base) and len(mine) == row["prompts"] and len(theirs) == base["prompts"]
            row["matched_speedup"] = rate(mine) / rate(theirs) if whole and rate(theirs) else None
            row["matched_speedup_ci"] = speedup_interval(mine, theirs) \
                if row["matched_speedup"] is not None and cfg != plain_cfg else None
            ref = token.get(cat) if token else None
            row["vs_token"] = row["mal"] / ref["mal"] - 1 if ref and ref["mal"] and row["mal"] else None
            ses = (row.get("mal_se"), ref.get("mal_se")) if row["vs_token"] is not None else (None,)
            row["vs_token_se"] = (ses[0] ** 2 + ses[1] ** 2) ** 0.5 / ref["mal"] if None not in ses else None


def write_json(raw: dict, table: dict, path: str | Path) -> None:
    """Every raw figure plus the aggregated table, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps({**raw, "table": table}, indent=1, default=str))
    tmp.replace(path)


def read_json(path: str | Path) -> dict:
    """A bench.json written by write_json (the raw part; the table is recomputed). FileNotFoundError /
    ValueError for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"bench results not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict) or not {"meta", "results", "errors"} <= set(data):
        raise ValueError(f"{path}: not a verispec bench.json (needs meta, results, errors)")
    data.pop("table", None)
    return data


def merge(raws: list[dict], common_prompts: bool = False) -> dict:
    """Several runs as one: results, errors and configs concatenated; the first run's meta, with
    every run's command and machine kept under meta['runs']. Runs must share sampling and max_tokens.
    common_prompts keeps only the prompts every configuration completed (paired comparisons after
    an interrupted run)."""
    if not raws:
        raise ValueError("nothing to merge")
    first = raws[0]["meta"]
    for r in raws[1:]:
        if (r["meta"]["params"], r["meta"]["max_tokens"]) != (first["params"], first["max_tokens"]):
            raise ValueError("cannot merge runs with different sampling parameters or max_tokens")
    out = {"meta": {**first, "command": " && ".join(r["meta"].get("command", "?") for r in raws),
                    "runs": [r["meta"] for r in raws]},
           "configs": {}, "results": [], "errors": [], "interrupted": any(r.get("interrupted") for r in raws)}
    for r in raws:
        out["configs"].update(r.get("configs", {}))
        out["results"] += r["results"]
        out["errors"] += r["errors"]
    if common_prompts:
        done: dict = defaultdict(set)
        for r in out["results"]:
            done[r["config"]].add(r["id"])
        keep = set.intersection(*done.values()) if done else set()
        out["results"] = [r for r in out["results"] if r["id"] in keep]
    out["meta"]["prompts"] = len({r["id"] for r in out["results"]})
    return out


def _f(x, fmt="{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def _pm(se, pct: bool = True) -> str:
    """' ± se' (as a percentage when pct), or nothing."""
    if se is None or (not pct and se == 0):
        return ""
    return f" ± {100 * se:.1f}%" if pct else f" ± {se:.2f}"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:+.1f}%"


def markdown(raw: dict, table: dict, command: str = "", plots: list[str] = ()) -> str:
    """The Markdown report: setup, overall table, speedup by category, positions, root acceptance, errors."""
    m = raw["meta"]
    mach = m["machine"]
    lines = ["# verispec bench", ""]
    if command:
        lines += ["```", command, "```", ""]
    lines += [f"- machine: {mach['cpu']}, {mach['cores']} cores" + (f", GPU {mach['gpu']}" if mach.get("gpu") else "")
              + f"; load average {mach['load_avg_start']:.2f} at start, {mach.get('load_avg_end', float('nan')):.2f} at end",
              f"- sampling: {m['params']}; max {m['max_tokens']} new tokens; seed {m['seed']} (+ prompt index"
              + (f" + sample x prompts); {m['samples']} samples a prompt" if m.get("samples", 1) > 1 else ")"),
              f"- {m['prompts']} prompts; started {m['started']}, finished {m.get('finished', '?')}"
              + (" - **INTERRUPTED: partial results**" if raw.get("interrupted") else ""), ""]
    cfgs = list(table)
    lines += ["## All prompts", "",
              ("| configuration | prompts | tok/s | speedup | decode speedup | MAL | vs token | accept rate "
               "| draft / target / verify | root achieved | root expected | root optimal | gap |"),
              "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for c in cfgs:
        r = table[c][ALL]
        ts = r["time_split"]
        split = "-" if not ts else " / ".join(f"{100 * ts[k]:.0f}%" for k in ("draft", "target", "verify"))
        root = r["root"] or {}
        lines.append(f"| {c} | {r['prompts']} | {r['tok_s']:.1f} | {_f(r['speedup'])}{format_interval(r.get('speedup_ci'))} | "
                     f"{_f(r.get('decode_speedup'))}{format_interval(r.get('decode_speedup_ci'))} | {_f(r['mal'])}{_pm(r.get('mal_se'), False)} | "
                     f"{_pct(r['vs_token'])}{_pm(r.get('vs_token_se'))} | {_f(r['acceptance_rate'])} | {split} | {_f(root.get('achieved'), '{:.3f}')} | "
                     f"{_f(root.get('expected'), '{:.3f}')} | {_f(root.get('optimal'), '{:.3f}')} | "
                     f"{_f(root.get('gap'), '{:+.3f}')} |")
    lines += ["", ("MAL: mean acceptance length, tokens per target pass with the bonus / recovered token counted "
                   "(1.00 = plain decoding), ± one standard error over iterations. speedup (low-high): its 90% "
                   "interval, a paired bootstrap over the prompts. decode speedup: the same with each prompt's prefill left out "
                   "(- where a system does not report its prefill). vs token: MAL relative to the token rule with the same drafter, gamma and "
                   "backend. root: first-draft-position acceptance achieved (measured), expected (the rule's exact "
                   "probability, where it has a closed form), optimal (the optimal k-draft acceptance for the same "
                   "p, q, k); gap = optimal - achieved.")]
    cats = sorted({k for c in cfgs for k in table[c] if k != ALL})
    sampled = isinstance(m.get("params"), dict) and float(m["params"].get("temperature") or 0) > 0
    for title, key, fmt in (("Speedup over plain decoding on the same backend, by category", "speedup", "{:.2f}"),
                            ("Decoding alone (each prompt's prefill left out): speedup by category", "decode_speedup",
                             "{:.2f}"),
                            ("At matched lengths (every run timed at its prompt's mean length): speedup by category",
                             "matched_speedup", "{:.2f}"),
                            ("Mean acceptance length by category", "mal", "{:.2f}")):
        if key == "matched_speedup" and not sampled:  # greedy texts are as long in every configuration
            continue
        if not any(table[c][ALL].get(key) is not None for c in cfgs if parse_name(c)["system"] != "plain"):
            continue
        lines += ["", f"## {title}", "", "| configuration | " + " | ".join(cats) + f" | {ALL} |",
                  "|---|" + "---:|" * (len(cats) + 1)]
        for c in cfgs:
            if table[c][ALL].get(key) is None:
                continue
            lines.append(f"| {c} | " + " | ".join(_f(table[c].get(k, {}).get(key), fmt)
                                                  + (format_interval(table[c].get(k, {}).get(f"{key}_ci")) if key != "mal" else "")
                                                  for k in cats + [ALL]) + " |")
    depth = max((len(table[c][ALL]["per_position"]) for c in cfgs), default=0)
    if depth:
        lines += ["", "## Acceptance by draft position (P(accepted | reached))", "",
                  "| configuration | " + " | ".join(str(d + 1) for d in range(depth)) + " |", "|---|" + "---:|" * depth]
        for c in cfgs:
            pp = table[c][ALL]["per_position"]
            if pp:
                lines.append(f"| {c} | " + " | ".join(_f(pp[d]) if d < len(pp) else "" for d in range(depth)) + " |")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    if raw["errors"]:
        lines += ["", f"## Errors ({len(raw['errors'])})", ""]
        lines += [f"- `{e['config']}` prompt {e['prompt']}: {e['error']} ({e['where']})" for e in raw["errors"][:50]]
    return "\n".join(lines) + "\n"
