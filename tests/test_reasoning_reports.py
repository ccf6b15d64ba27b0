"""Reasoning mode in what users read: `rft-jax eval` and `rft-jax baseline` output, the run report, the
before/after table. The model is a random 2-layer one with SmolLM2's tokenizer (instruction format), so its
thinking never closes on its own and the think budget closes it."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import pytest

import rft_jax.checkpoint.store
from rft_jax.checkpoint.export import export_model
from rft_jax.cli import eval as eval_cli
from rft_jax.cli.baseline import main as baseline_main
from rft_jax.data.reasoning import ReasoningConfig
from rft_jax.evaluation import report
from rft_jax.model import DEFAULT_MODEL, ModelConfig, init_params
from rft_jax.model.tokenizer import load_tokenizer
from rft_jax.monitoring import MetricsWriter, names
from rft_jax.train.report_table import before_after_markdown

TINY = ModelConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                   head_dim=8, max_position_embeddings=512)
REASONING = ["--reasoning.mode", "on", "--reasoning.think-budget", "4", "--reasoning.answer-budget", "8"]
REWARD = ["--reward", "tests.toy_rewards:brevity"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """A random 2-layer model with SmolLM2's tokenizer (and chat template), as a Hugging Face folder."""
    folder = tmp_path_factory.mktemp("tiny_model")
    export_model(folder, TINY, init_params(TINY, jax.random.key(0), std=0.5), load_tokenizer(DEFAULT_MODEL))
    return str(folder)


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "test.jsonl"
    path.write_text("\n".join(json.dumps({"id": f"q{i}", "messages": [{"role": "user", "content": q}],
                                          "reference_answer": a})
                              for i, (q, a) in enumerate([("What is 2 + 2?", 4), ("What is 3 * 5?", 15)])))
    return path


# --- rft-jax eval and rft-jax baseline ---------------------------------------------------------------------------


def test_eval_with_reasoning_prints_and_writes_the_reasoning_metrics(tiny_model, data, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert eval_cli.main(["--model", tiny_model, "--data", str(data), *REWARD, *REASONING, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert all(f"{key} " in printed for key in names.REASONING)
    doc = json.loads(out.read_text())
    assert doc["metrics"][names.THINK_LENGTH_MAX] <= 4 and doc["metrics"][names.BUDGET_HIT_RATE] > 0
    assert doc["metrics"]["response_length/mean"] <= 12  # think_budget + answer_budget
    assert all({"thinking", "well_formed", "think_tokens"} <= set(s) for s in doc["samples"])
    # the same file, as a run's base and final evaluations, gives a report with the thinking under each answer
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("base", "final"):
        (run_dir / f"eval_{name}.json").write_text(json.dumps({**doc, "name": name}))
    page = report.build_report(run_dir).read_text()
    assert page.count("<details class='thinking'>") == 2 * len(doc["samples"])
    assert f"<summary>thinking ({doc['samples'][0]['think_tokens']} tokens)</summary>" in page


def test_eval_refuses_a_completion_budget_other_than_the_two_budgets(tmp_path, capsys):
    argv = ["--data", str(tmp_path / "none.jsonl"), *REASONING, "--max-new-tokens", "64"]
    assert eval_cli.main(argv) == 2  # refused before anything loads
    err = capsys.readouterr().err
    assert "think_budget + answer_budget = 12 tokens" in err and "--max-new-tokens is 64" in err
    assert eval_cli.completion_budget(None, ReasoningConfig()) == 128
    assert eval_cli.completion_budget(None, ReasoningConfig(mode="on", think_budget=4, answer_budget=8)) == 12


def test_eval_of_a_checkpoint_takes_the_runs_reasoning_under_the_flags(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"model": {"name": "m"}, "reasoning": {
        "mode": "on", "think_budget": 16, "answer_budget": 8, "answer_cue": "\nANSWER:", "future_key": 1}}))
    ref = rft_jax.checkpoint.store.CheckpointRef(run_dir, "latest", 3)
    monkeypatch.setattr(rft_jax.checkpoint.store, "find_checkpoint", lambda path: ref)
    argv = ["--data", "d.jsonl", "--checkpoint", str(run_dir), "--reasoning.think-budget", "32"]
    args = eval_cli.with_run_reasoning(eval_cli.EvalOptions(data="d.jsonl", checkpoint=str(run_dir)), argv)
    assert (args.reasoning.mode, args.reasoning.think_budget, args.reasoning.answer_budget) == ("on", 32, 8)
    assert args.reasoning.answer_cue == "\nANSWER:" and args.checkpoint == str(run_dir)
    (run_dir / "config.json").write_text(json.dumps({"kind": "sft", "model": {"name": "m"}}))  # no reasoning
    plain = eval_cli.EvalOptions(data="d.jsonl", checkpoint=str(run_dir))
    assert eval_cli.with_run_reasoning(plain, argv[:4]) is plain


def test_baseline_with_reasoning_prints_the_samples_reasoning_metrics(tiny_model, data, tmp_path, capsys):
    out = tmp_path / "baseline.json"
    # one greedy sample: both passes share one compiled sampler (the reasoning plumbing is under test, not pass@k)
    argv = ["--model", tiny_model, "--data", str(data), *REWARD, *REASONING, "--samples", "1", "--temperature", "0",
            "--out", str(out)]
    assert baseline_main(argv) == 0
    printed = capsys.readouterr().out
    assert all(f"  {key} " in printed for key in names.REASONING)
    doc = json.loads(out.read_text())
    assert names.WELL_FORMED_RATE in doc["metrics"] and "thinking" in doc["samples"][0]


# --- the run report and the before/after table -------------------------------------------------------------------


def _eval_file(run_dir: Path, name: str, step: int | None, reasoning: bool) -> None:
    samples = [{"id": "q0", "prompt": "2 + 2?", "completion": "4", "reward": 1.0},
               {"id": "q1", "prompt": "3 * 5?", "completion": "", "reward": 0.0}]
    metrics = {"reward/mean": 0.5, "pass@1": 0.5}
    if reasoning:
        samples[0].update(thinking="two <b>plus</b> two", well_formed=True, think_tokens=7)
        samples[1].update(thinking="three times five is", well_formed=False, think_tokens=16)
        metrics |= {names.THINK_LENGTH_MEAN: 11.5, names.THINK_LENGTH_MAX: 16.0, names.ANSWER_LENGTH_MEAN: 2.0,
                    names.BUDGET_HIT_RATE: 0.5, names.WELL_FORMED_RATE: 0.5}
    doc = {"name": name, "step": step, "model": "tiny", "metrics": metrics, "samples": samples}
    (run_dir / f"eval_{name}.json").write_text(json.dumps(doc))


def _run(run_dir: Path, reasoning: bool) -> Path:
    with MetricsWriter(run_dir, console=False, tensorboard=False, alarm_config=None) as writer:
        for step in range(1, 6):
            metrics = {names.REWARD_MEAN: 0.1 * step, names.RESPONSE_LENGTH_MEAN: 20.0}
            if reasoning:
                metrics |= {names.THINK_LENGTH_MEAN: 10.0 + step, names.ANSWER_LENGTH_MEAN: 3.0,
                            names.BUDGET_HIT_RATE: 0.5 / step, names.WELL_FORMED_RATE: 1 - 0.5 / step}
            writer.write(step, metrics)
    _eval_file(run_dir, "base", None, reasoning)
    _eval_file(run_dir, "final", 5, reasoning)
    return report.build_report(run_dir)


def test_report_shows_the_thinking_under_each_answer_and_the_reasoning_metrics(tmp_path):
    page_path = _run(tmp_path, reasoning=True)
    page = page_path.read_text()
    assert page.count("<details class='thinking'><summary>thinking (7 tokens)</summary>") == 2  # base and final
    assert "<pre>two &lt;b&gt;plus&lt;/b&gt; two</pre></details>" in page  # escaped, under the answer
    assert page.index("<pre>4</pre><details") < page.index("two &lt;b&gt;")
    assert page.count("class='malformed'") == 2  # q1 never closed its thinking, in both evaluations
    table = page[page.index("class='evals'"):]
    for key in names.REASONING:
        assert f">{key}<" in table
    assert "<td>50.0%</td>" in table  # the rates are shares
    assert {"reasoning_length.png", "reasoning_form.png"} <= {p.name for p in page_path.parent.glob("*.png")}


def test_report_without_reasoning_is_unchanged(tmp_path):
    page_path = _run(tmp_path, reasoning=False)
    body = page_path.read_text().partition("<body>")[2]
    assert "<details" not in body and "malformed" not in body and "reasoning/" not in body
    assert not any(p.name.startswith("reasoning") for p in page_path.parent.glob("*.png"))


def test_before_after_table_has_the_reasoning_rows_after_the_others():
    base = {"reward/mean": 0.2, "response_length/mean": 40.0, names.THINK_LENGTH_MEAN: 30.0,
            names.THINK_LENGTH_MAX: 32.0, names.ANSWER_LENGTH_MEAN: 10.0, names.BUDGET_HIT_RATE: 0.75,
            names.WELL_FORMED_RATE: 0.25}
    final = {k: v * 0.5 if k != "reward/mean" else 0.8 for k, v in base.items()}
    table = before_after_markdown({"base": base, "final": final}).splitlines()
    assert [row.split(" | ")[0] for row in table[2:]] == [
        "| mean reward", "| mean length (tokens)", "| think length (tokens)", "| answer length (tokens)",
        "| think budget hit", "| well-formed answers"]
    assert "| think budget hit | 75.0% | 37.5% |" in table and "| think length (tokens) | 30.00 | 15.00 |" in table
    plain = before_after_markdown({n: {"reward/mean": 0.5, "response_length/mean": 9.0} for n in ("base", "final")})
    assert "think" not in plain
