"""Reward interface: specs, the registry, aggregation, batching, and error containment."""

import textwrap

import pytest

from rft_jax.data import Example
from rft_jax.rewards import REWARDS, RewardResult, RewardSpec, build_reward, parse_spec
from rft_jax.rewards.result import coerce

EX = Example(id="e", messages=[{"role": "user", "content": "2+2?"}], reference_answer=4)

PLUGIN = textwrap.dedent('''
    from rft_jax.rewards import RewardResult

    CALLS = []

    def brevity(example, completion, *, limit=10):
        return 1.0 if len(completion) <= limit else 0.0

    def buggy(example, completion):
        if "boom" in completion:
            raise RuntimeError("reward bug")
        return RewardResult(0.5, metrics={"seen": 1.0})

    def nan_reward(example, completion):
        return float("nan")

    def with_batch(example, completion):
        CALLS.append("single")
        return 0.25

    def _batch(examples, completions):
        CALLS.append("batch")
        if any("poison" in c for c in completions):
            raise ValueError("batch failed")
        return [1.0 for _ in completions]

    with_batch.batched = _batch
    with_batch.needs_reference = True
''')


@pytest.fixture()
def plugin(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import my_rewards
    return importlib.reload(my_rewards)


def test_parse_spec_forms(tmp_path):
    assert parse_spec("math_answer") == RewardSpec("math_answer")
    assert parse_spec({"name": "math_answer", "mode": "strict_line", "weight": 2}) == \
        RewardSpec("math_answer", {"mode": "strict_line"}, 2.0)
    assert parse_spec('{"name": "regex_format", "pattern": "x"}').params == {"pattern": "x"}
    path = tmp_path / "r.json"
    path.write_text('{"name": "length_penalty", "max_len": 5}')
    assert parse_spec(str(path)) == RewardSpec("length_penalty", {"max_len": 5})


def test_every_registered_reward_builds():
    for name in REWARDS:
        params = {"regex_format": {"pattern": "x"}, "remote": {"url": "http://127.0.0.1:9"},
                  "judge": {"rubric": "Is the answer helpful?", "base_url": "http://127.0.0.1:9/v1", "model": "m"},
                  "openai_grader": {"grader": {"type": "string_check", "operation": "eq", "input": "a",
                                               "reference": "{{item.reference_answer}}"}},
                  }.get(name, {})
        assert build_reward({"name": name, **params}).score_batch([], []) == []


def test_unknown_reward_and_bad_params_fail_at_build_time():
    with pytest.raises(ValueError, match="unknown reward"):
        build_reward("math_anwser")
    with pytest.raises(ValueError, match="bad parameters"):
        build_reward({"name": "math_answer", "moed": "strict_line"})
    with pytest.raises(ValueError, match="bad parameters"):
        build_reward({"name": "code_tests", "cpu_seconds": 3})


def test_aggregate_is_weighted_sum_with_components_logged():
    scorer = build_reward({"name": "aggregate", "components": {
        "correct": {"name": "math_answer", "mode": "strict_line", "weight": 1.0},
        "format": {"name": "answer_format", "weight": 0.5},
        "short": {"name": "length_penalty", "max_len": 3, "weight": 2.0}}})
    assert scorer.needs_reference
    good, wrong, long = scorer.score_batch([EX] * 3, ["ANSWER: 4", "ANSWER: 5", "two words\nANSWER: 4"])
    assert good.score == 1.5 and good.components == {"correct": 1.0, "format": 1.0, "short": 0.0}
    assert wrong.score == 0.5 and wrong.components["correct"] == 0.0
    assert long.score == pytest.approx(1.0 + 0.5 + 2.0 * -(1 / 3))  # 4 words, 1 over a band of 3
    assert good.metrics["correct/format_ok"] == 1.0


def test_user_function_with_params(plugin):
    scorer = build_reward({"name": "my_rewards:brevity", "limit": 3})
    assert [r.score for r in scorer.score_batch([EX, EX], ["abc", "abcd"])] == [1.0, 0.0]
    assert not scorer.needs_reference


def test_errors_are_contained_per_sample(plugin):
    scorer = build_reward("my_rewards:buggy")
    ok, bad, not_str = scorer.score_batch([EX] * 3, ["fine", "boom", None])
    assert ok == RewardResult(0.5, metrics={"seen": 1.0})
    assert bad.score == 0.0 and "RuntimeError: reward bug" in bad.error
    assert not_str.score == 0.0 and "not str" in not_str.error
    nan = build_reward("my_rewards:nan_reward").score(EX, "x")
    assert nan.score == 0.0 and "non-finite" in nan.error


def test_batched_form_is_used_and_falls_back_per_sample(plugin):
    scorer = build_reward("my_rewards:with_batch")
    assert scorer.needs_reference
    assert [r.score for r in scorer.score_batch([EX] * 3, ["a", "b", "c"])] == [1.0] * 3
    assert plugin.CALLS == ["batch"]
    plugin.CALLS.clear()
    assert [r.score for r in scorer.score_batch([EX] * 2, ["a", "poison"])] == [0.25, 0.25]
    assert plugin.CALLS == ["batch", "single", "single"]


def test_aggregate_reports_component_errors(plugin):
    scorer = build_reward({"name": "aggregate", "components": {"a": "my_rewards:buggy", "b": "answer_format"}})
    result = scorer.score(EX, "boom")
    assert result.score == 0.0 and result.error.startswith("a: my_rewards:buggy: RuntimeError")


def test_coerce_accepts_numbers_and_rejects_junk():
    import numpy as np
    assert coerce(np.float32(0.5)).score == 0.5 and coerce(True).score == 1.0
    assert coerce("1.0").error and coerce(None).error
