"""The requests written for the head's training stay apart from Spec-Bench dev, the evaluation set: none shares
six words in a row with any of its turns (`head_data.sharing_runs`, the check `scripts/instruction_data.py`
applies)."""
from pathlib import Path

import pytest

from verispec.bench.datasets import DEV
from verispec.draft.head_data import sharing_runs, turns_of, word_runs

DATA = Path(__file__).resolve().parents[2] / "scripts" / "data"


def spec_bench_turns() -> list[str]:
    if not DEV.is_file():
        pytest.skip("Spec-Bench dev is not here")
    return turns_of(DEV)


@pytest.mark.parametrize("name", ["written_requests.jsonl", "written_requests_2.jsonl"])
def test_written_requests_share_no_six_words_with_spec_bench(name):
    prompts = turns_of(DATA / name)
    assert len(prompts) > 1000
    assert sharing_runs(prompts, spec_bench_turns()) == []
    assert len({p.strip().lower() for p in prompts}) == len(prompts)  # no request twice


def test_a_request_quoting_spec_bench_is_caught():
    """The control: six words in a row of a Spec-Bench turn, in other case and punctuation, are found; five are not."""
    turn = next(t for t in spec_bench_turns() if len(t.split()) > 12)
    words = turn.split()[3:9]
    six = "Please, " + " ".join(words).upper() + "!"
    five = "Please " + " ".join(words[:5]) + " banana"
    assert sharing_runs(["an unrelated request about boats", six, five], [turn]) == [1]
    assert word_runs("A b, C!", 2) == {("a", "b"), ("b", "c")}
