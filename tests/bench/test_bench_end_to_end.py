"""`verispec bench` end to end: tiny random-init torch models (every torch configuration incl.
transformers' generate, prompt lookup and assisted generation), and 2 prompts x 8 tokens on the
embedded GGUF with llama-cpp-python's own decoding and prompt lookup (n_threads = 1)."""
from __future__ import annotations

import json

import pytest

from verispec import cli


def _check_outputs(out, n_plots: int) -> dict:
    data = json.loads((out / "bench.json").read_text())
    assert {"meta", "configs", "results", "errors", "interrupted", "table"} <= set(data)
    md = (out / "report.md").read_text()
    assert md.startswith("# verispec bench") and "## All prompts" in md
    assert len(list(out.glob("*.png"))) == n_plots
    return data


def test_tiny_torch(tiny_llama_dir, tiny_draft_dir, tiny_prompts, tmp_path, capsys, monkeypatch):
    import torch

    from verispec.bench import configs

    dtypes = {}
    real_init = configs.HFGenerateRunner.__init__

    def init(self, name, fields, s):  # which dtype each generate baseline's model computes in
        real_init(self, name, fields, s)
        dtypes[name] = self.backend.model.dtype
    monkeypatch.setattr(configs.HFGenerateRunner, "__init__", init)
    out = tmp_path / "torch"
    rc = cli.main(["bench", "--dataset", tiny_prompts, "--model", tiny_llama_dir, "--backends", "torch",
                   "--baselines", "plain,hf,hf-pld,hf-assist,hf-f32", "--verifiers", "token,specinfer", "--drafters", "model",
                   "--draft-model", tiny_draft_dir, "--k", "1,2", "--gamma", "2", "--temperature", "1",
                   "--max-tokens", "8", "--threads", "1", "--no-warmup", "--quiet", "--n-ctx", "256", "--samples", "2",
                   "--configs", "verispec:nope:model:k1:g2@torch", "--out", str(out)])
    assert rc == 0
    data = _check_outputs(out, 4)
    assert [e["config"] for e in data["errors"]] == ["verispec:nope:model:k1:g2@torch"]  # reported, the rest ran
    table = data["table"]
    assert set(table) == {"plain@torch", "hf-generate@torch", "hf-generate+pld@torch", "hf-generate+assist@torch",
                          "hf-generate+f32@torch",
                          "verispec:token:model:k1:g2@torch", "verispec:specinfer:model:k2:g2@torch"}
    for cats in table.values():
        assert set(cats) == {"alpha", "beta", "ALL"} and cats["ALL"]["prompts"] == 2 and cats["ALL"]["tok_s"] > 0
        assert cats["ALL"]["runs"] == 4  # --samples 2
    assert table["verispec:token:model:k1:g2@torch"]["ALL"]["matched_speedup"] > 0
    assert table["hf-generate@torch"]["ALL"]["matched_speedup"] is None  # generate reports no prefill time
    assert "At matched lengths" in (out / "report.md").read_text()
    root = table["verispec:specinfer:model:k2:g2@torch"]["ALL"]["root"]
    assert root["calls"] > 0 and root["violations"] == 0 and 0 <= root["achieved"] <= 1
    assert root["expected"] <= root["optimal"] + 1e-9
    assert table["verispec:token:model:k1:g2@torch"]["ALL"]["mal"] >= 1
    assert "verispec:nope" in capsys.readouterr().err
    assert dtypes["hf-generate+f32@torch"] == torch.float32  # transformers' own default, whatever --dtype says


def test_gguf_llama_cpp_python(smollm2_path, tmp_path):
    out = tmp_path / "gguf"
    prompts = tmp_path / "prompts.jsonl"  # its own prompts: the test must not depend on ../shared
    long = "Summarize: " + "the cat sat on the mat and looked at the dog. " * 60  # > 512 tokens: one batch fails
    prompts.write_text('{"prompt": "Repeat: the cat sat on the mat. The cat sat on", "category": "alpha"}\n'
                       '{"turns": ["Name three colours."], "category": "beta"}\n'
                       f'{{"prompt": "{long}", "category": "gamma"}}\n')
    rc = cli.main(["bench", "run", "--dataset", str(prompts), "--max-tokens", "8", "--threads", "1", "--n-ctx", "1024",
                   "--baselines", "plain,llama-cpp,llama-cpp-pld", "--verifiers", "greedy", "--drafters", "ngram",
                   "--gamma", "4", "--no-warmup", "--quiet", "--no-plots", "--out", str(out)])
    assert rc == 0
    data = _check_outputs(out, 0)
    assert not data["errors"]
    t = data["table"]
    assert t["plain@llamacpp"]["ALL"]["speedup"] == pytest.approx(1.0)
    for cfg in ("llama-cpp-python@llamacpp", "llama-cpp-python+pld@llamacpp", "verispec:greedy:ngram:k1:g4@llamacpp"):
        assert t[cfg]["ALL"]["tokens"] > 0 and t[cfg]["ALL"]["speedup"] > 0
        assert t[cfg]["ALL"]["decode_speedup"] > 0  # llama-cpp-python's prefill: until its first draw
    for r in data["results"]:
        assert 0 < r["prefill"] < r["seconds"]


def test_cli_errors_and_verifiers_subcommand(tmp_path, capsys):
    assert cli.main(["bench", "--dataset", str(tmp_path / "none.jsonl"), "--out", str(tmp_path)]) == 2
    assert "prompt file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "--samples", "0", "--out", str(tmp_path)])
    assert e.value.code == 2 and "--samples must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "verifiers", "--help"])
    assert e.value.code == 0
    assert "--rules" in capsys.readouterr().out


def test_tiny_torch_with_a_head_file(tiny_llama_dir, tiny_prompts, fit_tiny_head, tmp_path):
    """--draft-head, --head-tree: the head and ngram+head configurations load that file and tree size (recorded in
    the run's configs); a
    foreign file is a reported error of those configurations, and the rest of the run goes on."""
    from verispec.draft.head_model import save_head

    head = str(tmp_path / "tiny.head.pt")
    save_head(fit_tiny_head(tiny_llama_dir), head)
    common = ["bench", "--dataset", tiny_prompts, "--model", tiny_llama_dir, "--backends", "torch", "--baselines",
              "plain", "--verifiers", "greedy", "--drafters", "head,ngram+head", "--gamma", "2", "--max-tokens", "8",
              "--threads", "1", "--no-warmup", "--quiet", "--no-plots", "--no-acceptance", "--n-ctx", "256"]
    assert cli.main(common + ["--draft-head", head, "--head-tree", "4", "--out", str(tmp_path / "ok")]) == 0
    data = _check_outputs(tmp_path / "ok", 0)
    assert not data["errors"]
    for d in ("head", "ngram+head"):  # (the tiny head is rarely confident enough to draft: HeadDrafter.confidence)
        name = f"verispec:greedy:{d}:k1:g2@torch"
        assert data["table"][name]["ALL"]["tokens"] > 0 and data["configs"][name]["draft_head"] == head
        assert data["configs"][name]["head_tree"] == 4
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a head")
    assert cli.main(common + ["--draft-head", str(junk), "--out", str(tmp_path / "bad")]) == 0
    data = _check_outputs(tmp_path / "bad", 0)
    assert sorted(e["config"] for e in data["errors"]) == ["verispec:greedy:head:k1:g2@torch",
                                                          "verispec:greedy:ngram+head:k1:g2@torch"]
    assert "not a verispec draft head" in data["errors"][0]["error"]


def test_speed_script_takes_the_shared_sampling_flags(smollm2_path, tiny_prompts, tmp_path, capsys):
    """`python -m verispec.bench.speed` on the embedded model: --min-p reaches both sides, the table and JSON
    come out, every prompt run once a seed of --samples; a bad sampling value is refused before any model loads."""
    import json

    from verispec.bench import speed

    out = tmp_path / "speed.json"
    common = ["--data", tiny_prompts, "--model", smollm2_path, "--max-tokens", "4", "--threads", "1",
              "--n-ctx", "512", "--quiet", "--temperature", "1"]
    assert speed.main(common + ["--min-p", "0.05", "--samples", "2", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["config"]["min_p"] == 0.05 and res["table"]["ALL"]["spec / llama-cpp"] > 0
    assert res["table"]["ALL"]["spec / llama-cpp (matched)"] > 0
    runs = res["runs"]  # the raw figures: one record a prompt and configuration, summing to the table
    assert {r["config"] for r in runs} == {"llama-cpp", "spec", "plain"}
    prompts = {r["prompt"] for r in runs}
    assert sorted((r["prompt"], r["seed"]) for r in runs if r["config"] == "plain") == \
        sorted((p, s) for p in prompts for s in (0, 1))
    spec = [r for r in runs if r["config"] == "spec"]
    tps = sum(r["tokens"] for r in spec) / sum(r["seconds"] for r in spec)
    assert tps == pytest.approx(res["table"]["ALL"]["spec tok/s"]) and all(r["first"] <= r["seconds"] for r in spec)
    assert all(isinstance(r["text"], str) and (r["text"] or not r["tokens"]) for r in runs)  # for "same text"
    assert "| ALL |" in capsys.readouterr().out
    with pytest.raises(ValueError, match="min_p"):
        speed.main(common + ["--min-p", "1.5"])
    with pytest.raises(SystemExit):
        speed.main(common + ["--samples", "0"])
    assert "--samples must be >= 1" in capsys.readouterr().err
