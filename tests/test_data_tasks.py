"""Built-in task generators and their committed sample files."""

import os

import pytest

from rft_jax.cli.data import main as data_main
from rft_jax.data import load_dataset
from rft_jax.data.tasks.arithmetic import LEVELS, generate_arithmetic
from rft_jax.data.tasks.json_extraction import generate_json_extraction
from rft_jax.data.tasks.prompt import PromptStyle
from rft_jax.data.tasks.sql import generate_sql
from rft_jax.rewards import build_reward

SAMPLES = os.path.join(os.path.dirname(__file__), "..", "experiments", "data")


def test_arithmetic_is_seeded_levelled_and_integer():
    a, b = generate_arithmetic(40, seed=7), generate_arithmetic(40, seed=7)
    assert [e.to_record() for e in a] == [e.to_record() for e in b]
    assert [e.messages for e in generate_arithmetic(40, seed=8)] != [e.messages for e in a]
    assert {e.metadata["level"] for e in a} == set(LEVELS)
    assert all(isinstance(e.reference_answer, int) and e.reference_answer >= 0 for e in a)
    assert len({e.metadata["question"] for e in a}) == 40


def test_arithmetic_answers_are_right():
    for ex in generate_arithmetic(30, seed=1, levels=("two_operand",)):
        expr = ex.metadata["question"].removeprefix("What is ").rstrip("?").replace("×", "*")
        assert eval(expr) == ex.reference_answer  # noqa: S307 - our own generated arithmetic


def test_prompt_wording_is_configurable():
    style = PromptStyle(system="You are a careful tutor.", instruction="End with ANSWER: <n>.")
    ex = generate_arithmetic(1, seed=0, prompt=style)[0]
    assert ex.messages[0] == {"role": "system", "content": "You are a careful tutor."}
    assert ex.messages[1]["content"].endswith("\n\nEnd with ANSWER: <n>.")
    assert generate_arithmetic(1, seed=0, prompt=PromptStyle(instruction=""))[0].messages[0]["content"] == \
        ex.metadata["question"]


def test_unknown_level_is_rejected():
    with pytest.raises(ValueError, match="unknown arithmetic levels"):
        generate_arithmetic(3, seed=0, levels=("calculus",))


@pytest.mark.parametrize("generate,reward", [
    (generate_arithmetic, {"name": "math_answer", "mode": "strict_line"}),
    (generate_json_extraction, "json_schema"),
    (generate_sql, "sql_result"),
])
def test_generated_reference_scores_one(generate, reward):
    examples = generate(9, seed=2)
    scorer = build_reward(reward)
    results = scorer.score_batch(examples, [scorer.render_reference(e) for e in examples])
    assert [r.score for r in results] == [1.0] * 9, [r.error for r in results]


@pytest.mark.parametrize("name", ["arithmetic_sample", "json_extraction_sample", "sql_sample", "code_tests_sample"])
def test_committed_samples_validate(name):
    assert len(load_dataset(os.path.join(SAMPLES, f"{name}.jsonl"))) >= 3


def test_generate_cli_matches_library(tmp_path):
    out = tmp_path / "a.jsonl"
    assert data_main(["generate", "arithmetic", "--n", "8", "--seed", "5", "--out", str(out),
                      "--levels", "one_step,two_step", "--instruction", "Say ANSWER: n"]) == 0
    loaded = load_dataset(str(out))
    expected = generate_arithmetic(8, seed=5, levels=("one_step", "two_step"),
                                   prompt=PromptStyle(instruction="Say ANSWER: n"))
    assert [e.to_record() for e in loaded] == [e.to_record() for e in expected]
