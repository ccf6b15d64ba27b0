"""`rft-jax reward test`: references should score at the top; useless rewards are flagged."""

import json
import os

from rft_jax.cli.reward import main as reward_main
from rft_jax.data.tasks.arithmetic import generate_arithmetic
from rft_jax.rewards import build_reward
from rft_jax.rewards.reward_test import run_reward_test

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "experiments", "data", "arithmetic_sample.jsonl")
EXAMPLES = generate_arithmetic(12, seed=0)


def test_good_reward_separates_and_passes(capsys):
    spec = json.dumps({"name": "aggregate", "components": {"correct": {"name": "math_answer", "mode": "strict_line"},
                                                           "format": {"name": "answer_format", "weight": 0.2}}})
    assert reward_main(["test", "--data", SAMPLE, "--reward", spec, "--limit", "20"]) == 0
    out = capsys.readouterr().out
    assert "reference              n=20" in out and "correct/format_ok" in out and "OK:" in out
    assert "bad:other_reference" in out and "separation: reference beats every bad completion on 100%" in out


def test_constant_reward_is_flagged():
    report = run_reward_test(build_reward({"name": "regex_format", "pattern": ".*", "where": "full"}), EXAMPLES[:4])
    assert not report.ok()
    assert any("constant reward" in w for w in report.warnings)


def test_format_only_reward_cannot_tell_right_from_wrong():
    report = run_reward_test(build_reward("answer_format"), EXAMPLES)
    assert report.separation < 0.2  # only where no other example had a different answer to offer
    assert any("reference beats every bad completion on only" in w for w in report.warnings)


def test_erroring_reward_and_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"completion": "ANSWER: 999999", "kind": "wrong"}) + "\n" +
                   json.dumps({"id": EXAMPLES[0].id, "completion": f"ANSWER: {EXAMPLES[0].reference_answer}",
                               "kind": "leaked"}) + "\n")
    report = run_reward_test(build_reward({"name": "math_answer", "mode": "strict_line"}), EXAMPLES, bad_file=str(bad))
    assert [r.score for r in report.bad["wrong"]] == [0.0] * len(EXAMPLES)
    assert [r.score for r in report.bad["leaked"]] == [1.0]  # a "bad" answer that is actually right ...
    assert report.separation == (len(EXAMPLES) - 1) / len(EXAMPLES)  # ... is caught as non-separation
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps(e.to_record()) for e in EXAMPLES[:3]))
    assert reward_main(["test", "--data", str(data), "--reward", '{"name": "json_schema"}']) == 1
    assert "WARNING" in capsys.readouterr().out
