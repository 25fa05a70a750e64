"""Configuration names and the grid; the interleaved loop's robustness, with fake runners (no models)."""
from __future__ import annotations

from collections import Counter

import pytest

from verispec.bench import report
from verispec.bench.configs import Outcome, Runner, Settings, expand, parse_name
from verispec.bench.design import run_order
from verispec.bench.runner import run_bench
from verispec.sampling import SamplingParams


def test_parse_and_expand():
    f = parse_name("verispec:block:model:k1:g4@llamacpp")
    assert f == {"system": "verispec", "verifier": "block", "drafter": "model", "k": 1, "gamma": 4, "family": "llamacpp"}
    assert parse_name("verispec:spectr:ngram:k4:gauto@torch")["gamma"] is None
    assert parse_name("hf-generate+assist@torch") == {"system": "hf-assist", "family": "torch"}
    assert parse_name("hf-generate+f32@torch") == {"system": "hf-f32", "family": "torch"}
    with pytest.raises(ValueError, match="unknown configuration"):
        parse_name("vllm@gpu")
    names = expand(["llamacpp", "torch"], ["plain", "llama-cpp", "hf-pld"], ["token", "specinfer", "auto"], ["model"],
                   [1, 4], [4], temperature=1.0)
    assert names == ["plain@llamacpp", "llama-cpp-python@llamacpp", "plain@torch", "hf-generate+pld@torch",
                     "verispec:token:model:k1:g4@llamacpp", "verispec:specinfer:model:k4:g4@llamacpp",
                     "verispec:block:model:k1:g4@llamacpp",
                     "verispec:token:model:k1:g4@torch", "verispec:specinfer:model:k4:g4@torch",
                     "verispec:block:model:k1:g4@torch"]
    assert expand(["llamacpp"], [], ["auto"], ["ngram"], [1], [None], 0.0) == ["verispec:greedy:ngram:k1:gauto@llamacpp"]
    with pytest.raises(ValueError, match="unknown verifier"):
        expand(["llamacpp"], [], ["nope"], ["ngram"], [1], [None], 0.0)
    with pytest.raises(ValueError, match="unknown baseline"):
        expand(["llamacpp"], ["vllm"], [], [], [1], [None], 0.0)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_run_order_is_balanced_for_place_and_predecessor(n):
    """Over one cycle of `run_order` (n rows, 2n for odd n) every configuration runs equally often in each place
    and directly after each other configuration equally often; the plain rotation it replaced (the control)
    puts every configuration after the same one each time."""
    names = [f"c{j}" for j in range(n)]
    cycle = n if n % 2 == 0 else 2 * n

    def balance(order):
        rows = [order(i) for i in range(cycle)]
        assert all(sorted(r) == names for r in rows)
        places = Counter((r.index(c), c) for r in rows for c in r)
        after = Counter((a, b) for r in rows for a, b in zip(r, r[1:]))
        return (len(places) == n * n and len(set(places.values())) == 1,
                len(after) == n * (n - 1) and len(set(after.values())) <= 1)

    assert balance(lambda i: run_order(names, i)) == (True, True)
    assert run_order(names, 7) == run_order(names, 7 + cycle)
    if n >= 3:  # the old order: drift balanced, carry-over not
        assert balance(lambda i: names[i % n:] + names[:i % n]) == (True, False)


class Fake(Runner):
    """Emits 10 tokens in 0.1 s of pretend time; fails on prompt 'bad'; Ctrl-C on prompt 'stop'."""

    def run(self, prompt, params, max_tokens, seed):
        if prompt == "bad" and self.name.startswith("verispec"):
            raise RuntimeError("boom")
        if prompt == "stop":
            raise KeyboardInterrupt
        fast = 2.0 if self.system == "verispec" else 1.0
        stats = {"emitted": 10, "target_calls": 5, "accepted": 5, "draft_tokens": 8, "position_tried": [5, 3],
                 "position_accepted": [4, 1], "time_draft": 0.01, "time_target": 0.03, "time_verify": 0.01,
                 "time_total": 0.05}
        return Outcome(10, 0.1 / fast, stats if self.system == "verispec" else None)


def _build(name, settings):
    if name == "verispec:broken:x:k1:g1@llamacpp":
        raise ValueError("cannot load")
    f = parse_name(name)
    return Fake(name, f["family"], "verispec" if f["system"] == "verispec" else f["system"], f)


def test_failures_are_reported_and_the_run_goes_on(tmp_path):
    rows = [{"id": str(i), "category": c, "prompt": p} for i, (c, p) in enumerate([("a", "x"), ("b", "bad"), ("a", "y")])]
    names = ["plain@llamacpp", "verispec:token:ngram:k1:g4@llamacpp", "verispec:broken:x:k1:g1@llamacpp"]
    seen = []
    raw = run_bench(rows, names, Settings(), SamplingParams(), 8, progress=False, build=_build,
                    on_progress=lambda r: seen.append(len(r["results"])))
    assert seen == [2, 3, 5] and not raw["interrupted"]
    assert [(e["config"], e["prompt"]) for e in raw["errors"]] == [
        ("verispec:broken:x:k1:g1@llamacpp", None), ("verispec:token:ngram:k1:g4@llamacpp", "1")]
    table = report.aggregate(raw)
    spec = table["verispec:token:ngram:k1:g4@llamacpp"]["ALL"]
    assert spec["speedup"] == pytest.approx(2.0) and spec["mal"] == pytest.approx(2.0)
    assert spec["per_position"] == [0.8, pytest.approx(1 / 3)]
    report.write_json(raw, table, tmp_path / "b.json")
    md = report.markdown(raw, table)
    assert "## Errors (2)" in md and "| verispec:token:ngram:k1:g4@llamacpp | 2 |" in md


def test_ctrl_c_keeps_partial_results():
    rows = [{"id": "0", "category": "a", "prompt": "x"}, {"id": "1", "category": "a", "prompt": "stop"}]
    raw = run_bench(rows, ["plain@llamacpp"], Settings(), SamplingParams(), 8, progress=False, build=_build)
    assert raw["interrupted"] and len(raw["results"]) == 1
    assert "INTERRUPTED" in report.markdown(raw, report.aggregate(raw))


def test_samples_run_every_prompt_once_a_round_with_their_own_seeds():
    """Two samples of 3 prompts: every prompt runs once before any runs again (llama-cpp-python would take a prompt
    run twice in a row from its cache), each (prompt, sample) with its own seed, the same for every configuration;
    the report pools a prompt's samples (3 prompts, 6 runs)."""
    seen = []

    class Seeds(Fake):
        def run(self, prompt, params, max_tokens, seed):
            seen.append((self.name, prompt, seed))
            return super().run(prompt, params, max_tokens, seed)

    def build(name, settings):
        f = parse_name(name)
        return Seeds(name, f["family"], "verispec" if f["system"] == "verispec" else f["system"], f)

    rows = [{"id": str(i), "category": "a", "prompt": p} for i, p in enumerate("xyz")]
    names = ["plain@llamacpp", "verispec:token:ngram:k1:g4@llamacpp"]
    raw = run_bench(rows, names, Settings(), SamplingParams(), 8, seed=10, progress=False, warmup=False, build=build,
                    samples=2)
    assert [p for _, p, _ in seen[::2]] == list("xyzxyz")  # one configuration's prompts, in order of the runs
    assert {(p, s) for _, p, s in seen} == {(p, 10 + j) for j, p in enumerate("xyzxyz")}
    assert all(sum(1 for n, _, s in seen if s == seed) == 2 for _, _, seed in seen)  # each seed: both configurations
    assert {r["seed"] for r in raw["results"]} == set(range(10, 16)) and raw["meta"]["samples"] == 2
    spec = report.aggregate(raw)["verispec:token:ngram:k1:g4@llamacpp"]["ALL"]
    assert (spec["prompts"], spec["runs"]) == (3, 6) and spec["speedup"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="samples"):
        run_bench(rows, names, Settings(), SamplingParams(), 8, build=build, samples=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="no prompts"):
        run_bench([], ["plain@llamacpp"], Settings(), SamplingParams(), 8, build=_build)
    with pytest.raises(ValueError, match="max_tokens"):
        run_bench([{"id": "0", "category": "a", "prompt": "x"}], ["plain@llamacpp"], Settings(), SamplingParams(), 0,
                  build=_build)


def test_rerender_and_merge_saved_runs(tmp_path):
    from verispec.bench import command

    rows = [{"id": "0", "category": "a", "prompt": "x"}]
    for i, name in enumerate(["plain@llamacpp", "verispec:token:ngram:k1:g4@llamacpp"]):
        raw = run_bench(rows, [name], Settings(), SamplingParams(), 8, progress=False, build=_build)
        report.write_json(raw, report.aggregate(raw), tmp_path / f"{i}.json")
    assert command.main(["--from-json", str(tmp_path / "0.json"), str(tmp_path / "1.json"), "--out", str(tmp_path / "m"),
                         "--no-plots"]) == 0
    merged = report.read_json(tmp_path / "m" / "bench.json")
    assert len(merged["results"]) == 2 and len(merged["meta"]["runs"]) == 2
    assert report.aggregate(merged)["verispec:token:ngram:k1:g4@llamacpp"]["ALL"]["speedup"] == pytest.approx(2.0)
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(ValueError, match="not a verispec bench.json"):
        report.read_json(tmp_path / "bad.json")


def test_merge_common_prompts_pairs_the_comparison():
    rows = [{"id": str(i), "category": "a", "prompt": "x"} for i in range(3)]
    a = run_bench(rows[:2], ["plain@llamacpp"], Settings(), SamplingParams(), 8, progress=False, build=_build)
    b = run_bench(rows, ["verispec:token:ngram:k1:g4@llamacpp"], Settings(), SamplingParams(), 8, progress=False,
                  build=_build)
    assert len(report.merge([a, b])["results"]) == 5
    paired = report.merge([a, b], common_prompts=True)
    assert sorted(r["id"] for r in paired["results"]) == ["0", "0", "1", "1"] and paired["meta"]["prompts"] == 2


def _result(config, pid, tokens, seconds, prefill, seed=0):
    stats = None if prefill is None else {
        "emitted": tokens, "target_calls": tokens, "accepted": 0, "draft_tokens": 0, "time_draft": 0.0,
        "time_target": seconds - prefill, "time_verify": 0.0, "time_total": seconds, "position_tried": [],
        "position_accepted": [], "time_prefill": prefill}
    return {"config": config, "id": pid, "category": "a", "seed": seed, "tokens": tokens, "seconds": seconds,
            "stats": stats}


def test_decode_speedup_leaves_the_prefill_out():
    """Two prompts with 1 s of prefill each for both systems, whose decoding takes half plain decoding's time: end to
    end 200 tokens in 17 s against 32 s (1.88x), decoding alone 2x on both prompts (so its interval is 2-2); a system
    that reports no prefill (transformers' generate) gets no decode figure."""
    raw = {"results": [_result("plain@torch", "0", 100, 11.0, 1.0), _result("plain@torch", "1", 100, 21.0, 1.0),
                       _result("verispec:greedy:ngram:k1:gauto@torch", "0", 100, 6.0, 1.0),
                       _result("verispec:greedy:ngram:k1:gauto@torch", "1", 100, 11.0, 1.0),
                       _result("hf-generate@torch", "0", 100, 20.0, None), _result("hf-generate@torch", "1", 100, 40.0, None)],
           "errors": [], "meta": {"machine": {"cpu": "x", "cores": 2, "load_avg_start": 0.0}, "params": {},
                                  "max_tokens": 100, "seed": 0, "prompts": 2, "started": "now"}}
    table = report.aggregate(raw)
    spec, hf = table["verispec:greedy:ngram:k1:gauto@torch"]["ALL"], table["hf-generate@torch"]["ALL"]
    assert spec["speedup"] == pytest.approx(32 / 17)
    assert spec["decode_speedup"] == pytest.approx(30 / 15)  # the same 2 s of prefill out of both
    assert spec["decode_speedup_ci"] == pytest.approx((2.0, 2.0))
    assert hf["speedup"] == pytest.approx(32 / 60) and hf["decode_speedup"] is None and hf["decode_speedup_ci"] is None
    md = report.markdown(raw, table)
    assert "| 1.88 (" in md and "| 2.00 (" in md and "Decoding alone" in md


def test_matched_speedup_takes_out_the_lengths_drawn():
    """At temperature 1 two systems that prefill (1 s) and step (0.03 s) alike drew answers of different lengths on
    each of two samples: raw, the one that drew short texts looks 0.6x; at matched lengths both are 1.00x, and the
    report shows that table (a greedy run's does not). A system that steps 10% slower stays below 0.97x."""
    def res(config, n, seed, step=0.03):
        return _result(config, "0", n, 1.0 + (n - 1) * step, 1.0, seed)

    meta = {"machine": {"cpu": "x", "cores": 2, "load_avg_start": 0.0}, "params": {"temperature": 1.0},
            "max_tokens": 128, "seed": 0, "samples": 2, "prompts": 1, "started": "now"}
    spec, slow = "verispec:block:ngram:k1:gauto@llamacpp", "verispec:token:ngram:k1:gauto@llamacpp"
    raw = {"meta": meta, "errors": [], "results": [res("plain@llamacpp", 120, 0), res(spec, 20, 0), res(slow, 120, 0, 0.033),
                                                   res("plain@llamacpp", 100, 1), res(spec, 30, 1), res(slow, 100, 1, 0.033)]}
    table = report.aggregate(raw)
    row = table[spec]["ALL"]
    assert row["speedup"] < 0.7 and row["matched_speedup"] == pytest.approx(1.0)
    assert row["prompts"] == 1 and row["runs"] == 2
    assert 0.9 < table[slow]["ALL"]["matched_speedup"] < 0.97
    md = report.markdown(raw, table)
    assert "At matched lengths" in md and "2 samples a prompt" in md
    greedy = {**raw, "meta": {**meta, "params": {"temperature": 0.0}}}
    assert "At matched lengths" not in report.markdown(greedy, report.aggregate(greedy))
