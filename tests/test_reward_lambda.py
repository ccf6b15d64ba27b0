"""`rft-jax reward lambda`: a generated AWS Lambda handler, invoked with the event Bedrock / Nova RFT documents."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from rft_jax.cli.reward import main as reward_main

PLUGIN = '''
from rft_jax.rewards.result import RewardResult


def brevity(example, completion):
    """Right answer, and short."""
    right = float(str(example.reference_answer) in completion)
    short = float(len(completion) <= 12)
    return RewardResult(right + 0.5 * short, components={"right": right, "short": short},
                        metrics={"chars": float(len(completion))})
'''

QUESTION = {"role": "user", "content": "Do you have a dedicated security team?"}
EVENT = [
    # as the Nova reward-function pages show it: the dataset row, plus id and the assistant's completion
    {"id": "123", "messages": [QUESTION, {"role": "assistant", "content": "No."}], "reference_answer": "No"},
    # as Bedrock's reward-function page shows it: reference_answer under metadata
    {"id": "124", "messages": [QUESTION, {"role": "assistant", "content": "As an AI, I have no such team: No."}],
     "metadata": {"reference_answer": "No", "my_key": "sample-001"}},
    {"id": "125", "messages": [QUESTION, {"role": "assistant", "content": "Yes."}], "reference_answer": "No"},
]


def load(path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def plugin(tmp_path, monkeypatch):
    (tmp_path / "nova_rewards.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("nova_rewards", None)  # each test imports its own copy


def test_handler_around_a_module_function_scores_the_documented_event(plugin, capsys):
    out = plugin / "lambda_function.py"
    assert reward_main(["lambda", "nova_rewards:brevity", "--out", str(out)]) == 0
    assert "lambda_function.lambda_handler" in capsys.readouterr().out
    assert "import nova_rewards" in out.read_text()
    reply = load(out, "generated_brevity").lambda_handler(EVENT, None)
    assert [r["id"] for r in reply] == ["123", "124", "125"]
    assert [r["aggregate_reward_score"] for r in reply] == [1.5, 1.0, 0.5]
    assert reply[0] == {"id": "123", "aggregate_reward_score": 1.5, "metrics_list": [
        {"name": "right", "value": 1.0, "type": "Reward"}, {"name": "short", "value": 1.0, "type": "Reward"},
        {"name": "chars", "value": 3.0, "type": "Metric"}]}


def test_handler_embeds_a_spec_file_and_answers_http_events(tmp_path):
    grader = {"type": "string_check", "name": "says_no", "operation": "like", "input": "{{sample.output_text}}",
              "reference": "{{item.reference_answer}}"}
    spec_file = tmp_path / "grader.json"
    spec_file.write_text(json.dumps(grader))
    out = tmp_path / "reward.py"
    assert reward_main(["lambda", str(spec_file), "--out", str(out)]) == 0
    spec_file.unlink()  # the handler holds the spec itself
    handler = load(out, "generated_grader").lambda_handler
    assert [r["aggregate_reward_score"] for r in handler(EVENT, None)] == [1.0, 1.0, 0.0]
    http = handler({"body": json.dumps(EVENT[:1]), "isBase64Encoded": False}, None)
    assert http["statusCode"] == 200 and json.loads(http["body"])[0]["aggregate_reward_score"] == 1.0
    # A bad HTTP body is the caller's mistake: a 400 in OpenAI's error shape, never a traceback.
    for body, says in (("[" * 5000, "nested too deeply"), ('{"samples": []}', "a JSON list of samples"),
                       ("not json", "bad JSON"), ("!!", "request body")):
        bad = handler({"body": body, "isBase64Encoded": body == "!!"}, None)
        assert bad["statusCode"] == 400 and says in json.loads(bad["body"])["error"]["message"], body[:20]


def test_a_failed_sample_scores_zero_in_documented_keys_and_is_logged(tmp_path, capsys):
    out = tmp_path / "lambda_function.py"
    assert reward_main(["lambda", '{"name": "math_answer", "mode": "strict_line"}', "--out", str(out)]) == 0
    handler = load(out, "generated_math").lambda_handler
    reply = handler([{"id": "a", "messages": [QUESTION]}, {"id": "b", "messages": [
        QUESTION, {"role": "assistant", "content": "ANSWER: 4"}], "reference_answer": 4}], None)
    assert reply[0] == {"id": "a", "aggregate_reward_score": 0.0, "metrics_list": []}
    assert reply[1]["aggregate_reward_score"] == 1.0
    assert '"reward_error": "the last message must be the assistant' in capsys.readouterr().out
    with pytest.raises(ValueError, match="list of samples"):
        handler({"samples": []}, None)


def test_generated_handler_runs_without_jax(plugin):
    out = plugin / "lambda_function.py"
    assert reward_main(["lambda", "nova_rewards:brevity", "--out", str(out)]) == 0
    code = ("import json, sys\nsys.modules['jax'] = None  # any import of jax now fails\n"
            "import lambda_function\n"
            f"print(json.dumps(lambda_function.lambda_handler({EVENT!r}, None)))\n")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": f"{plugin}{os.pathsep}{repo}"}
    run = subprocess.run([sys.executable, "-c", code], cwd=plugin, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert [r["aggregate_reward_score"] for r in json.loads(run.stdout)] == [1.5, 1.0, 0.5]


def test_unknown_reward_is_refused_before_writing(tmp_path, capsys):
    out = tmp_path / "lambda_function.py"
    assert reward_main(["lambda", "no_such_reward", "--out", str(out)]) == 2
    assert "unknown reward" in capsys.readouterr().err and not out.exists()
