"""`rft-jax generate` on a tiny random model: one row per prompt and sample, reproducible from the seed."""

from __future__ import annotations

import json

import pytest

from rft_jax.cli.generate import main as generate_main
from tests.test_sft_chain import tiny_hf_model

SAMPLES = 2
PROMPTS = [  # no reference answers: generate does not need them; the second has no id
    {"id": "p0", "messages": [{"role": "user", "content": "Name a colour."}]},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Count to 3."}]},
    {"id": "p2", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                              {"role": "user", "content": "Say it again."}]},
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return tiny_hf_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("data") / "prompts.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    return str(path)


def generate(model: str, data: str, out, *extra: str) -> list[dict]:
    # 3 prompts in batches of 2: a full batch and a partial one.
    assert generate_main(["--model", model, "--data", data, "--out", str(out), "--num-samples", str(SAMPLES),
                          "--max-new-tokens", "8", "--batch-size", "2", *extra]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_one_row_per_prompt_and_sample_and_the_seed_reproduces(tiny_model, prompts, tmp_path):
    rows = generate(tiny_model, prompts, tmp_path / "a.jsonl", "--seed", "3")
    assert len(rows) == len(PROMPTS) * SAMPLES
    assert [r["sample"] for r in rows] == [g for _ in PROMPTS for g in range(SAMPLES)]
    assert rows[0]["id"] == "p0" and rows[4]["id"] == "p2" and rows[2]["id"].startswith("ex-")  # stable id
    assert rows[4]["messages"] == PROMPTS[2]["messages"]  # the prompt: up to the last user turn
    assert all(1 <= r["completion_tokens"] <= 8 and isinstance(r["completion"], str) for r in rows)
    assert all(r["finish_reason"] in ("stop", "length") for r in rows)

    again = generate(tiny_model, prompts, tmp_path / "b.jsonl", "--seed", "3")
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    other = generate(tiny_model, prompts, tmp_path / "c.jsonl", "--seed", "4")
    assert [r["completion"] for r in other] != [r["completion"] for r in again]

    # A stop string only cuts the text: the same seed samples the same tokens.
    row = next(i for i, r in enumerate(rows) if len(r["completion"]) >= 2)
    text = rows[row]["completion"]
    stop = text[1:]
    stopped = generate(tiny_model, prompts, tmp_path / "d.jsonl", "--seed", "3", "--stop", stop)
    assert stopped[row]["completion"] == text[:text.find(stop)] and stopped[row]["finish_reason"] == "stop"
    assert stopped[row]["completion_tokens"] == rows[row]["completion_tokens"]


def test_bad_input_is_reported_before_loading_a_model(tmp_path, capsys):
    out = str(tmp_path / "out.jsonl")
    assert generate_main(["--model", "no-such-model", "--data", str(tmp_path / "missing.jsonl"), "--out", out]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(PROMPTS[0]) + "\n" + json.dumps({"id": "x", "messages": "hi"}) + "\n")
    assert generate_main(["--model", "no-such-model", "--data", str(bad), "--out", out]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: messages" in err
    assert generate_main(["--model", "no-such-model", "--data", str(bad), "--out", out, "--num-samples", "0"]) == 2
    assert "--num-samples must be at least 1" in capsys.readouterr().err


def test_checkpoint_that_is_not_a_run_is_refused(tiny_model, prompts, tmp_path, capsys):
    assert generate_main(["--checkpoint", str(tmp_path), "--data", prompts, "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "not a training run or checkpoint" in capsys.readouterr().err


def test_reasoning_mode_forces_the_tag_and_writes_the_thinking_beside_the_answer(tiny_model, prompts, tmp_path):
    out = tmp_path / "reasoned.jsonl"
    assert generate_main(["--model", tiny_model, "--data", prompts, "--out", str(out), "--batch-size", "2",
                          "--reasoning.mode", "on", "--reasoning.think-budget", "6",
                          "--reasoning.answer-budget", "12"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(PROMPTS)
    # A random model never closes its thinking: the sampler closes it at 6 tokens, then at most 12 more.
    assert all(r["reasoning_tokens"] == 6 and r["well_formed"] and r["completion_tokens"] <= 18 for r in rows)
    assert all("</think>" not in r["completion"] and "</think>" not in r["reasoning_content"] for r in rows)
    assert generate_main(["--model", tiny_model, "--data", prompts, "--out", str(out), "--reasoning.mode", "on",
                          "--max-new-tokens", "100"]) == 2  # the two budgets decide it
