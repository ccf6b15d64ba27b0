"""The training run end to end on a tiny random model: bad input, kill and resume."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from rft_jax.checkpoint.export import export_model
from rft_jax.data.problems import DatasetError
from rft_jax.grpo import OptimizerConfig
from rft_jax.model import ModelConfig, init_params
from rft_jax.rewards.spec import RewardSpec
from rft_jax.train.config import DataConfig, DynamicSamplingConfig, EvalConfig, SamplingConfig, TaskData, TrainConfig
from rft_jax.train.loop import run
from rft_jax.train.setup import ConfigError, set_aside_previous_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, smollm2):
    """A random 2-layer model with SmolLM2's tokenizer, exported as a Hugging Face folder."""
    _, _, tokenizer = smollm2
    cfg = ModelConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                      num_kv_heads=2, head_dim=8, max_position_embeddings=512)
    folder = tmp_path_factory.mktemp("tiny_model")
    export_model(folder, cfg, init_params(cfg, jax.random.key(0), std=0.5), tokenizer)
    return str(folder)


def tiny_config(model: str, out_dir: str, **overrides) -> TrainConfig:
    base = TrainConfig(
        data=DataConfig(task=TaskData(name="arithmetic", num_train=16, num_val=4, num_test=0), max_prompt_tokens=128),
        reward=RewardSpec("tests.toy_rewards:brevity"), require_signal=False, batch_size=2, max_steps=4,
        sampling=SamplingConfig(samples_per_prompt=4, max_new_tokens=16), evaluation=EvalConfig(interval=100),
        optimizer=OptimizerConfig(learning_rate=1e-2), out_dir=out_dir, seed=0)
    base = dataclasses.replace(base, model=dataclasses.replace(base.model, name=model, compute_dtype="float32"))
    return dataclasses.replace(base, **overrides)


def test_unknown_reward_is_refused_before_compute(tiny_model, tmp_path):
    with pytest.raises(ConfigError, match="unknown reward 'no_such_reward'"):
        run(tiny_config(tiny_model, str(tmp_path), reward=RewardSpec("no_such_reward")))


def test_invalid_dataset_is_refused_with_line_and_field(tiny_model, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}], "reference_answer": 1}\n{"messages": []}\n')
    cfg = tiny_config(tiny_model, str(tmp_path / "run"), data=DataConfig(train_file=str(bad)))
    with pytest.raises(DatasetError, match=r"bad.jsonl:2"):
        run(cfg)


def test_batch_that_does_not_divide_is_refused(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="not divisible"):
        tiny_config(tiny_model, str(tmp_path), batch_size=3, optimizer=OptimizerConfig(grad_accum_steps=2))


def test_response_longer_than_context_is_refused(tiny_model, tmp_path):
    cfg = tiny_config(tiny_model, str(tmp_path), sampling=SamplingConfig(max_new_tokens=1024))
    with pytest.raises(ConfigError, match="exceeds the model's context"):
        run(cfg)


def _train_cmd(model: str, out_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rft_jax.cli", "train", "--model.name", model, "--model.compute-dtype", "float32",
            "--data.task.name", "arithmetic", "--data.task.num-train", "16", "--data.task.num-val", "4",
            "--data.task.num-test", "0", "--data.max-prompt-tokens", "128", "--reward", "tests.toy_rewards:brevity",
            "--no-require-signal", "--batch-size", "2", "--max-steps", "6", "--sampling.samples-per-prompt", "4",
            "--sampling.max-new-tokens", "16", "--evaluation.interval", "100", "--checkpoint.interval", "100",
            "--optimizer.learning-rate", "0.01", "--out-dir", str(out_dir), *extra]


def _adapter(out_dir: Path) -> dict[str, np.ndarray]:
    return load_file(str(out_dir / "export" / "adapter" / "adapter_model.safetensors"))


def _steps_logged(out_dir: Path) -> list[int]:
    path = out_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow  # a whole run (20-95 s): `make test-slow`, keeping the default suite under 15 min
def test_killed_run_resumes_to_the_same_parameters(tiny_model, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XLA_FLAGS": ""}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # The uninterrupted run goes on beside the one that gets killed (compile-bound, so two cores help).
    log = tmp_path / "uninterrupted.log"
    with open(log, "wb") as sink:
        uninterrupted = subprocess.Popen(_train_cmd(tiny_model, straight), env=env, cwd=ROOT, stdout=sink,
                                         stderr=subprocess.STDOUT)
    proc = subprocess.Popen(_train_cmd(tiny_model, killed), env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    deadline = time.time() + 600
    while max(_steps_logged(killed), default=0) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=600)[0].decode()
    assert "continue with --resume" in out, out[-2000:]
    stopped_at = max(_steps_logged(killed))
    assert 2 <= stopped_at < 6
    assert not (killed / "export").exists()

    subprocess.run(_train_cmd(tiny_model, killed, "--resume"), check=True, env=env, cwd=ROOT, capture_output=True)
    assert uninterrupted.wait(timeout=600) == 0, log.read_text()[-2000:]
    a, b = _adapter(straight), _adapter(killed)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)  # bitwise on CPU


def test_a_fresh_run_sets_an_earlier_run_in_its_folder_aside(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "data").mkdir(parents=True)
    assert set_aside_previous_run(run_dir) is None  # generated data alone is not a run
    assert (run_dir / "data").is_dir()
    (run_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    (run_dir / "config.json").write_text("{}")
    moved = set_aside_previous_run(run_dir)
    assert moved is not None and moved.name.startswith("run.previous-") and not run_dir.exists()
    assert (moved / "metrics.jsonl").read_text() == '{"step": 1}\n'  # nothing lost
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.json").write_text("{}")
    first = os.stat(moved / "config.json").st_mtime
    os.utime(run_dir / "config.json", (first, first))  # the same stamp as the first: a new name
    second = set_aside_previous_run(run_dir)
    assert second is not None and second != moved and (second / "checkpoints").is_dir()


def _records(out_dir: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (out_dir / "metrics.jsonl").read_text().splitlines()) if r}


def _rollouts(out_dir: Path, step: int) -> list[dict]:
    from rft_jax.monitoring.writer import rollouts_path

    return [json.loads(line) for line in rollouts_path(out_dir, step).read_text().splitlines()]


# Three tiny runs (uninterrupted, stopped, resumed): 80 s. The schedule's count is also checked in the default
# suite by tests/test_trainer_knobs.py::test_the_schedule_counts_rl_steps_not_optimizer_updates.
@pytest.mark.slow
def test_ppo_passes_count_rl_steps_in_the_schedule_and_on_resume(tiny_model, tmp_path, monkeypatch):
    """mu = 2 passes make 2 optimizer updates a step; the learning rate and the data position still follow
    the RL step, so step k uses schedule(k) and a resumed run takes the same examples as an uninterrupted one."""
    from rft_jax.grpo import make_schedule
    from rft_jax.train import loop
    from rft_jax.train.config import CheckpointConfig
    from rft_jax.train.hooks import Hook

    opt = OptimizerConfig(learning_rate=1e-2, warmup_steps=1, schedule="cosine", min_lr_ratio=0.1)
    cfg = lambda out, **kw: tiny_config(tiny_model, str(out), ppo_epochs=2, optimizer=opt,  # noqa: E731
                                        rollout_log_interval=1, checkpoint=CheckpointConfig(interval=100),
                                        export=False, **kw)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run(cfg(straight))
    schedule = make_schedule(opt, 4)
    lrs = {step: r["actor/lr"] for step, r in _records(straight).items() if step > 0}
    assert lrs == pytest.approx({k + 1: float(schedule(k)) for k in range(4)}, rel=1e-6)

    stop_after_2 = Hook("stop_after_2", lambda ctx: setattr(ctx, "stop", "signal") if ctx.step == 2 else None)
    monkeypatch.setattr(loop, "time_budget_hook", lambda budget, started: stop_after_2)
    run(cfg(killed))
    assert max(_records(killed)) == 2
    monkeypatch.undo()
    run(cfg(killed, resume=True))
    for step in (3, 4):  # RL steps 2 and 3 (0-based): the same examples, samples and rewards
        assert _rollouts(killed, step) == _rollouts(straight, step), step
        assert _records(killed)[step]["actor/lr"] == pytest.approx(lrs[step], rel=1e-6)


@pytest.mark.slow  # a whole run (20-95 s): `make test-slow`, keeping the default suite under 15 min
def test_after_early_stopping_the_final_eval_and_export_use_the_best_checkpoint(tiny_model, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from rft_jax.checkpoint.store import CheckpointRef, read_trainable
    from rft_jax.train import evals

    rewards = iter([10.0, 0.0])  # step 1 beats the base model; step 2 does not, and patience 1 stops there
    real_eval = evals.run_eval

    def run_eval(name, *args, **kwargs):
        if name != "val":
            return real_eval(name, *args, **kwargs)
        reward = next(rewards)
        return SimpleNamespace(metrics={"reward/mean": reward, "pass@1": reward})

    monkeypatch.setattr(evals, "run_eval", run_eval)
    out = tmp_path / "run"
    data = DataConfig(task=TaskData(name="arithmetic", num_train=16, num_val=4, num_test=2), max_prompt_tokens=128)
    results = run(tiny_config(tiny_model, str(out), data=data, evaluation=EvalConfig(interval=1, patience=1)))
    assert max(_records(out)) == 2
    best = read_trainable(CheckpointRef(out, "best", 1))
    last = read_trainable(CheckpointRef(out, "latest", 2))
    exported = _adapter(out)["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    assert not np.array_equal(exported, np.asarray(last["layers"]["q"]["b"][0]).T)
    np.testing.assert_array_equal(exported, np.asarray(best["layers"]["q"]["b"][0]).T)
    assert json.loads((out / "eval_final.json").read_text())["step"] == 1 and results["final_step"] == 1


@pytest.mark.slow  # a whole tiny run; keeps the default suite under 15 minutes
def test_the_warm_started_policy_is_the_kl_reference_as_init_from_is(tiny_model, tmp_path, monkeypatch):
    """With a warm start the KL reference is the policy RL starts from: at the first update the policy
    and the reference are the same model, so the KL is 0; the export's adapter applies to that policy."""
    from rft_jax.grpo import GRPOLossConfig
    from rft_jax.train import before_rl
    from rft_jax.train.config import WarmStartConfig

    def demos(*, tokenizer, examples, **_):  # a random model never ends an answer: fixed demonstrations
        return [(tokenizer.apply_chat_template(ex.prompt_messages, tools=ex.tools), "7\nANSWER: 7")
                for ex in examples]

    monkeypatch.setattr(before_rl, "self_format_demos", demos)
    out = tmp_path / "run"
    cfg = tiny_config(tiny_model, str(out), max_steps=1, loss=GRPOLossConfig(beta=0.1),
                      warm_start=WarmStartConfig(steps=3, num_demos=4, batch_size=2, learning_rate=1e-2))
    run(cfg)
    assert abs(_records(out)[1]["actor/kl_loss"]) < 1e-7
    doc = json.loads((out / "export" / "adapter" / "adapter_config.json").read_text())
    assert doc["base_model_name_or_path"] == str((out / "export" / "base").absolute())
    assert "warm start" in json.loads((out / "export" / "base" / "origin.json").read_text())["started_from"]


@pytest.mark.slow  # a whole tiny run; keeps the default suite under 15 minutes
def test_dynamic_sampling_and_the_kl_monitor_in_a_run(tiny_model, tmp_path):
    """Dynamic sampling refills groups whose rewards agree from further prompts; the KL to the reference is
    logged every step although beta = 0."""
    out = tmp_path / "run"
    cfg = tiny_config(tiny_model, str(out), reward=RewardSpec("tests.toy_rewards:coin"), max_steps=2,
                      sampling=SamplingConfig(samples_per_prompt=2, max_new_tokens=16), kl_monitor_interval=1,
                      dynamic_sampling=DynamicSamplingConfig(enabled=True, max_rounds=4))
    run(cfg)
    records = _records(out)
    for step in (1, 2):
        r = records[step]
        assert r["dynamic/signal_groups"] + r["dynamic/filler_groups"] == cfg.batch_size
        assert r["dynamic/extra_rounds"] <= 4 and r["dynamic/extra_prompts"] == 2 * r["dynamic/extra_rounds"]
        assert r["dynamic/signal_groups"] == cfg.batch_size or r["dynamic/extra_rounds"] == 4
        assert "actor/ref_kl" in r and r["actor/ref_kl"] >= 0.0
    assert records[2]["actor/ref_kl"] > 0.0  # the hook runs after the update: the adapters have moved


@pytest.mark.slow  # a whole tiny run; keeps the default suite under 15 minutes
def test_a_run_in_reasoning_mode_forces_the_tag_logs_reasoning_metrics_and_evaluates_the_answer(tiny_model, tmp_path):
    from rft_jax.data.reasoning import ReasoningConfig  # noqa: PLC0415

    out = tmp_path / "run"
    reasoning = ReasoningConfig(mode="on", think_budget=8, answer_budget=8)
    run(tiny_config(tiny_model, str(out), reasoning=reasoning, max_steps=2,
                    data=DataConfig(task=TaskData(name="arithmetic", num_train=16, num_val=4, num_test=4),
                                    max_prompt_tokens=256)))
    steps = [r for r in (json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines())
             if "reasoning/think_length/mean" in r]
    assert len(steps) == 2
    # A random model never writes </think>: every episode is cut at the budget and the tag is forced.
    assert all(r["reasoning/budget_hit_rate"] == 1.0 and r["reasoning/think_length/mean"] == 8 for r in steps)
    assert all(r["reasoning/well_formed_rate"] == 1.0 for r in steps)
    final = json.loads((out / "eval_final.json").read_text())
    assert final["metrics"]["reasoning/budget_hit_rate"] == 1.0
    sample = final["samples"][0]
    assert sample["think_tokens"] == 8 and sample["well_formed"] and "</think>" not in sample["completion"]
    assert json.loads((out / "config.json").read_text())["sampling"]["max_new_tokens"] == 16
