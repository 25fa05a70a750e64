"""Bad input reaches the user as a clear error (exit status 2, one line, no traceback)."""
import pytest

from verispec.cli import main


def run(capsys, *argv):
    rc = main(list(argv))
    err = capsys.readouterr().err
    return rc, err


@pytest.mark.parametrize("argv,needle", [
    (["--max-tokens", "0"], "max-tokens"),
    (["--temperature", "-1"], "temperature"),
    (["--top-p", "0"], "top_p"),
    (["--top-p", "1.5"], "top_p"),
    (["--model", "/nonexistent/model.gguf"], "nonexistent"),
    (["--verifier", "nope"], "unknown verifier"),
    (["--drafter", "model"], "--draft-model"),
    (["--drafter", "head"], "--backend torch"),
    (["--drafter", "ngram+head"], "--backend torch"),
    (["--head-tree", "3"], "--head-tree applies to --drafter head / ngram+head, not ngram"),
    (["--drafter", "model", "--head-quant", "int8"], "--head-quant applies to --drafter head / ngram+head"),
    (["--backend", "torch", "--drafter", "head", "--copy-branch", "3"], "--copy-branch applies to --drafter ngram+head, not head"),
    (["--draft-head", "h.pt", "--head-tree", "3"], "--draft-head, --head-tree apply to --drafter head / ngram+head"),
])
def test_bad_arguments(capsys, argv, needle):
    rc, err = run(capsys, "generate", "hi", *argv)
    assert rc == 2 and needle in err and "Traceback" not in err


@pytest.mark.parametrize("flag", ["--passages", "--prompts"])
def test_train_head_refuses_a_negative_count(capsys, flag):
    argv = {"--passages": ["--prompts", "0", "--passages", "-1"], "--prompts": ["--prompts", "-1"]}[flag]
    rc, err = run(capsys, "train-head", *argv)
    assert rc == 2 and f"{flag} must be an int >= 0" in err and "Traceback" not in err


@pytest.mark.parametrize("taps", ["0", "two"])
def test_train_head_refuses_taps_that_are_not_layers(capsys, taps):
    rc, err = run(capsys, "train-head", "--prompts", "0", "--taps", taps)
    assert rc == 2 and "--taps" in err and "Traceback" not in err


@pytest.mark.parametrize("weight", ["-1", "nan"])
def test_train_head_refuses_a_negative_feature_loss(capsys, weight):
    rc, err = run(capsys, "train-head", "--prompts", "0", "--feature-loss", weight)
    assert rc == 2 and "--feature-loss must be >= 0" in err and "Traceback" not in err


def test_train_head_refuses_taps_past_the_targets_layers(capsys, tiny_llama_dir):
    rc, err = run(capsys, "train-head", "--model", tiny_llama_dir, "--prompts", "0", "--taps", "2")
    assert rc == 2 and "--taps must name layers 1 .. 1" in err and "Traceback" not in err


def test_not_a_gguf(capsys, tmp_path):
    junk = tmp_path / "model.gguf"
    junk.write_text("not a model")
    rc, err = run(capsys, "generate", "hi", "--model", str(junk))
    assert rc == 2 and "GGUF" in err


def test_empty_prompt(capsys, smollm2_path):
    rc, err = run(capsys, "generate", "   ", "--threads", "1", "--drafter", "none")
    assert rc == 2 and "empty" in err


def test_prompt_longer_than_context(capsys, smollm2_path):
    rc, err = run(capsys, "generate", "word " * 600, "--n-ctx", "64", "--threads", "1", "--drafter", "none")
    assert rc == 2 and "context" in err


def test_vocabulary_mismatch(capsys, tiny_llama_dir, tmp_path, make_llama):
    other = make_llama(str(tmp_path / "v64"), seed=3, vocab=128)
    # same tokenizer, but a model whose embedding table is larger than the target's vocabulary
    import transformers

    cfg = transformers.AutoConfig.from_pretrained(other)
    cfg.vocab_size = 160
    transformers.LlamaForCausalLM(cfg).save_pretrained(other)
    rc, err = run(capsys, "generate", "hello", "--backend", "torch", "--model", tiny_llama_dir,
                  "--drafter", "model", "--draft-model", other)
    assert rc == 2 and "vocab" in err.lower()


def test_generate_works(capsys, smollm2_path):
    rc = main(["generate", "Say hello.", "--max-tokens", "8", "--threads", "1", "--temperature", "0"])
    out = capsys.readouterr()
    assert rc == 0 and out.out.strip() and "tok/s" in out.err


def test_head_confidence(capsys, tiny_llama_dir):
    """--head-confidence outside [0, 1) is a clear error; the engine's default is the drafter's own."""
    import inspect

    from verispec.draft.head import HeadDrafter
    from verispec.engine.build import EngineConfig

    assert EngineConfig().head_confidence == inspect.signature(HeadDrafter).parameters["confidence"].default
    rc, err = run(capsys, "generate", "hi", "--backend", "torch", "--model", tiny_llama_dir, "--drafter", "head",
                  "--head-confidence", "1.5")
    assert rc == 2 and "confidence must be in [0, 1)" in err and "Traceback" not in err


def test_head_tree(capsys, tiny_llama_dir):
    """--head-tree below 0 is a clear error; the engine's default node cap is the drafter's own."""
    from verispec.draft.value_tree import TreeShape
    from verispec.engine.build import EngineConfig

    assert EngineConfig().head_tree == TreeShape().nodes
    rc, err = run(capsys, "generate", "hi", "--backend", "torch", "--model", tiny_llama_dir, "--drafter", "head",
                  "--head-tree", "-1")
    assert rc == 2 and "head_tree must be an int >= 0" in err and "Traceback" not in err


def test_draft_head_file_errors(capsys, tiny_llama_dir, tmp_path):
    junk = tmp_path / "junk.head.pt"
    junk.write_text("not a head")
    rc, err = run(capsys, "generate", "hi", "--backend", "torch", "--model", tiny_llama_dir, "--drafter", "head",
                  "--draft-head", str(junk))
    assert rc == 2 and "not a verispec draft head" in err and "Traceback" not in err
    rc, err = run(capsys, "generate", "hi", "--backend", "torch", "--model", tiny_llama_dir, "--drafter", "head")
    assert rc == 2 and "trained for another target" in err  # the shipped head belongs to SmolLM2
