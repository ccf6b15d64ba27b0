"""`rft-jax sweep`: arms and seeds expanded into named runs, their `rft-jax train` commands (printed, run here
with a concurrency limit, or as a Slurm array), refusal of unknown fields before anything runs, resuming, and a
real sweep of two tiny runs (30-40 s on 2 cores: two `rft-jax train` processes compiling side by side)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from rft_jax.cli import sweep as sweep_cli
from rft_jax.cli.train import build_config, load_experiment
from rft_jax.sweep import Sweep, axis, grid, product, runner, runs, slurm, zipped
from rft_jax.sweep.spec import load_sweep, run_name
from rft_jax.train.config import TrainConfig
from tests.test_sft_chain import tiny_hf_model

ROOT = Path(__file__).resolve().parents[1]
LR = "optimizer.learning_rate"


def _experiment(folder: Path, sweep: str, config: str = "TrainConfig()") -> Path:
    """An experiment file with CONFIG and the given SWEEP expression."""
    path = folder / "exp.py"
    path.write_text(f"from rft_jax.sweep import Sweep, grid\nfrom rft_jax.train.config import TrainConfig\n"
                    f"CONFIG = {config}\nSWEEP = {sweep}\n")
    return path


def test_grid_product_and_zipped_expand_arms_in_order():
    assert grid({LR: [1e-4, 3e-4]}, batch_size=[4, 8]) == [
        {LR: 1e-4, "batch_size": 4}, {LR: 1e-4, "batch_size": 8}, {LR: 3e-4, "batch_size": 4}, {LR: 3e-4, "batch_size": 8}]
    assert product(axis("lora.rank", [8, 16]), [{"mode": "lora"}]) == [
        {"lora.rank": 8, "mode": "lora"}, {"lora.rank": 16, "mode": "lora"}]
    assert zipped(axis("lora.rank", [8, 16]), axis(LR, [1e-4, 5e-5])) == [
        {"lora.rank": 8, LR: 1e-4}, {"lora.rank": 16, LR: 5e-5}]
    with pytest.raises(ValueError, match="one length"):
        zipped(axis("lora.rank", [8, 16]), axis(LR, [1e-4]))


def test_runs_are_arms_times_seeds_with_unique_names_that_do_not_depend_on_other_arms():
    sweep = Sweep(arms=grid({LR: [1e-4, 3e-4]}, **{"lora.rank": [8, 16]}), seeds=(0, 1, 2),
                  common={"data.task.num-test": 100})
    got = runs(sweep)
    assert len(got) == 12 and len({r.name for r in got}) == 12
    first = got[0]
    assert first.name == "lora.rank=8,optimizer.learning_rate=0.0001,seed=0"
    assert first.overrides == {"data.task.num_test": 100, LR: 1e-4, "lora.rank": 8}  # common, left out of the name
    assert first.seed == 0 and first.arm == "lora.rank=8,optimizer.learning_rate=0.0001"
    # The same arm names its run the same way alone, reordered, or with its keys spelt with hyphens.
    alone = runs(Sweep(arms=[{"lora.rank": 8, "optimizer.learning-rate": 1e-4}], seeds=(0,)))
    assert alone[0].name == first.name
    assert runs(Sweep())[0].name == "base" and runs(Sweep())[0].seed is None
    long = run_name({"reward": {"name": "math_answer", "mode": "strict_line"}, "data.task.levels": ["a" * 60, "b" * 60]}, 3)
    assert len(long) == 100 and long == run_name({"data.task.levels": ["a" * 60, "b" * 60],
                                                  "reward": {"mode": "strict_line", "name": "math_answer"}}, 3)


def test_runs_refuse_clashing_names_and_keys_the_sweep_sets():
    with pytest.raises(ValueError, match="arms 0 and 1 both name their run"):
        runs(Sweep(arms=[{"reward": "a/b"}, {"reward": "a_b"}]))
    with pytest.raises(ValueError, match="sets 'seed': list the seeds in Sweep"):
        runs(Sweep(arms=[{"seed": 3}]))
    with pytest.raises(ValueError, match="Sweep.common sets 'out_dir'"):
        runs(Sweep(common={"out-dir": "x"}))


def test_flags_are_what_rft_jax_train_parses_back():
    overrides = {LR: 3e-4, "export": False, "dynamic_sampling.enabled": True, "data.task.levels": ["one_step"],
                 "reward": {"name": "math_answer", "mode": "strict_line"}, "data.train_file": None,
                 "batch_size": 4, "model.remat": True}
    run = runs(Sweep(arms=[overrides], seeds=(5,), out_dir="sweeps/s"))[0]
    args = runner.train_args(Sweep(out_dir="sweeps/s"), run)
    assert "--no-export" in args and "--dynamic-sampling.enabled" in args and "--model.remat" in args
    cfg = build_config(TrainConfig(), args)
    assert (cfg.optimizer.learning_rate, cfg.export, cfg.dynamic_sampling.enabled) == (3e-4, False, True)
    assert (cfg.data.task.levels, cfg.data.train_file, cfg.batch_size, cfg.seed) == (("one_step",), None, 4, 5)
    assert cfg.reward.params == {"mode": "strict_line"} and cfg.model.remat
    assert cfg.out_dir == f"sweeps/s/{run.name}"
    preset = runs(Sweep(arms=[{"preset": "dapo"}]))[0]
    assert build_config(TrainConfig(), runner.train_args(Sweep(), preset)).dynamic_sampling.enabled


def test_the_default_experiments_sweep_is_three_learning_rates_by_three_seeds_and_parses():
    sweep = load_sweep(ROOT / "experiments" / "arithmetic_lora.py")
    got = runs(sweep)
    assert len(got) == 9 and {r.seed for r in got} == {0, 1, 2}
    assert sorted({r.overrides[LR] for r in got}) == [1.75e-4, 3.5e-4, 7e-4]
    assert sweep_cli.check_runs(load_experiment(sweep.config), sweep, got) is None


def test_dry_run_prints_the_commands_of_unfinished_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = _experiment(tmp_path, f'Sweep(arms=grid({{"{LR}": [1e-4, 3e-4]}}), seeds=(0, 1))')
    sweep = load_sweep(exp)
    assert sweep.out_dir == "runs/sweeps/exp" and sweep.config == str(exp)
    all_runs = runs(sweep)
    done = runner.run_dir(sweep, all_runs[1])
    done.mkdir(parents=True)
    (done / "results.json").write_text("{}")
    assert sweep_cli.main([str(exp), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    want = [shlex.join(runner.command(sweep, r)) for r in all_runs if r is not all_runs[1]]
    assert out.splitlines() == want
    assert want[0] == (f"rft-jax train --config {exp} --out-dir runs/sweeps/exp/optimizer.learning_rate=0.0001,seed=0 "
                       "--seed 0 --optimizer.learning-rate 0.0001")
    assert f"{all_runs[1].name}: finished already" in err
    assert not (tmp_path / "runs/sweeps/exp/sweep.json").exists()  # a dry run writes nothing


def test_unknown_field_or_bad_value_is_refused_before_anything_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runner.subprocess, "Popen", lambda *a, **k: pytest.fail("a run was started"))
    exp = _experiment(tmp_path, 'Sweep(arms=[{"batch_size": 4}, {"optimizer.learnig_rate": 1e-4}])')
    assert sweep_cli.main([str(exp)]) == 2
    err = capsys.readouterr().err
    assert "run 'optimizer.learnig_rate=0.0001'" in err and "optimizer has no field 'learnig_rate'" in err
    assert "did you mean 'learning_rate'" in err
    exp = _experiment(tmp_path, 'Sweep(arms=[{"batch_size": "many"}])')
    assert sweep_cli.main([str(exp)]) == 2
    assert "run 'batch_size=many': `rft-jax train` refuses its flags" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_file_without_a_sweep_says_what_to_add(tmp_path, capsys):
    exp = tmp_path / "plain.py"
    exp.write_text("from rft_jax.train.config import TrainConfig\nCONFIG = TrainConfig()\n")
    assert sweep_cli.main([str(exp)]) == 2
    assert "defines no sweep: add next to its CONFIG" in capsys.readouterr().err


# Stands in for `rft-jax train` in the runner tests: writes results.json into its --out-dir, except that a
# learning rate of 0.666 fails.
FAKE_TRAIN = """
import pathlib, sys
args = sys.argv[1:]
out = pathlib.Path(args[args.index("--out-dir") + 1])
print("fake train", *args)
if "0.666" in args:
    sys.exit(3)
(out / "results.json").write_text("{}")
"""


def test_runner_skips_finished_runs_reports_failures_and_goes_on(tmp_path, monkeypatch, capsys):
    started = []

    def fake(cmd):
        started.append(cmd)
        return [sys.executable, "-c", FAKE_TRAIN, *cmd[2:]]

    monkeypatch.setattr(runner, "local_argv", fake)
    sweep = Sweep(arms=axis(LR, [0.1, 0.666, 0.3]), seeds=(0,), out_dir=str(tmp_path / "sw"), config="exp.py")
    all_runs = runs(sweep)
    finished = runner.run_dir(sweep, all_runs[0])
    finished.mkdir(parents=True)
    (finished / "results.json").write_text("{}")
    assert runner.run_sweep(sweep, all_runs, "exp.py", concurrency=2) == 1
    assert len(started) == 2  # the finished run was skipped
    out = capsys.readouterr().out
    failed = runner.run_dir(sweep, all_runs[1])
    assert f"{all_runs[0].name}: finished already" in out
    assert f"{all_runs[1].name}: FAILED (exit 3)" in out and str(failed / "log.txt") in out
    assert "fake train" in (failed / "log.txt").read_text()
    doc = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert [(r["name"], r["status"]) for r in doc["runs"]] == [
        (all_runs[0].name, "done"), (all_runs[1].name, "failed"), (all_runs[2].name, "done")]
    assert doc["runs"][1]["overrides"] == {LR: 0.666} and doc["runs"][1]["seed"] == 0
    assert doc["runs"][1]["arm"] == f"{LR}=0.666"


def test_ctrl_c_stops_the_running_runs_and_marks_them_interrupted(tmp_path, monkeypatch):
    waits = "import time; time.sleep(60)"
    monkeypatch.setattr(runner, "local_argv", lambda cmd: [sys.executable, "-c", waits])

    def interrupt(line):
        if "started" in line:
            raise KeyboardInterrupt

    sweep = Sweep(arms=axis(LR, [0.1, 0.2]), out_dir=str(tmp_path / "sw"), config="exp.py")
    with pytest.raises(KeyboardInterrupt):
        runner.run_sweep(sweep, runs(sweep), "exp.py", echo=interrupt)
    doc = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert [r["status"] for r in doc["runs"]] == ["interrupted", "pending"]


def test_slurm_script_runs_one_command_per_array_task(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = Sweep(arms=axis(LR, [0.1, 0.2, 0.3]), out_dir="sw", config="exp.py")
    all_runs = runs(sweep)
    (tmp_path / "sw" / all_runs[0].name).mkdir(parents=True)
    (tmp_path / "sw" / all_runs[0].name / "results.json").write_text("{}")
    script = tmp_path / "sweep.sbatch"
    assert slurm.write_slurm(sweep, all_runs, script, concurrency=2, options=["gres=gpu:1", "--time=1:00:00"]) == 2
    text = script.read_text()
    for line in ("#SBATCH --array=0-1%2", "#SBATCH --output=sw/slurm/%A_%a.out", "#SBATCH --gres=gpu:1",
                 "#SBATCH --time=1:00:00", f"#SBATCH --chdir={tmp_path}"):
        assert line in text.splitlines()
    tsv = (tmp_path / "sw" / slurm.COMMANDS_FILE).read_text().splitlines()
    assert tsv == [f"{r.name}\t{shlex.join(runner.command(sweep, r))}" for r in all_runs[1:]]
    # Task 1 with a stand-in `rft-jax` on PATH: the third run's command, its output in RUN/log.txt.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "rft-jax").write_text('#!/bin/sh\necho "$@"\n')
    (bin_dir / "rft-jax").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_ARRAY_TASK_ID": "1"}
    subprocess.run(["bash", str(script)], env=env, check=True, capture_output=True)
    log = tmp_path / "sw" / all_runs[2].name / "log.txt"
    assert log.read_text().split() == runner.command(sweep, all_runs[2])[1:]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return tiny_hf_model(tmp_path_factory.mktemp("tiny_model"))


TINY = """TrainConfig(
    model=ModelSpec(name={model!r}, compute_dtype="float32"),
    data=DataConfig(task=TaskData(name="arithmetic", num_train=8, num_val=0, num_test=0), max_prompt_tokens=128),
    reward=RewardSpec("tests.toy_rewards:brevity"), require_signal=False, batch_size=2, max_steps=1,
    sampling=SamplingConfig(samples_per_prompt=2, max_new_tokens=4), evaluation=EvalConfig(interval=100),
    checkpoint=CheckpointConfig(interval=100), kl_monitor_interval=0, export=False)"""
IMPORTS = """from rft_jax.model.registry import ModelSpec
from rft_jax.rewards.spec import RewardSpec
from rft_jax.train.config import CheckpointConfig, DataConfig, EvalConfig, SamplingConfig, TaskData
"""


def test_a_sweep_of_two_tiny_runs_end_to_end_then_resumed(tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # The runs' processes: the repository importable (the toy reward), one CPU device, LLVM -O0 (compile-bound).
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    exp = _experiment(tmp_path, f'Sweep(arms=grid({{"{LR}": [0.01, 0.02]}}))', TINY.format(model=tiny_model))
    exp.write_text(IMPORTS + exp.read_text())
    assert sweep_cli.main([str(exp), "--out", "sw", "--concurrency", "2"]) == 0, capsys.readouterr()
    names = [f"{LR}=0.01", f"{LR}=0.02"]
    for name in names:
        assert (tmp_path / "sw" / name / "results.json").is_file(), (tmp_path / "sw" / name / "log.txt").read_text()
        config = json.loads((tmp_path / "sw" / name / "config.json").read_text())
        assert config["optimizer"]["learning_rate"] == float(name.split("=")[1])
    doc = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert [(r["name"], r["status"], r["run_dir"]) for r in doc["runs"]] == [(n, "done", f"sw/{n}") for n in names]
    capsys.readouterr()
    monkeypatch.setattr(runner.subprocess, "Popen", lambda *a, **k: pytest.fail("a finished run was started"))
    assert sweep_cli.main([str(exp), "--out", "sw"]) == 0
    out = capsys.readouterr().out
    assert all(f"{name}: finished already" in out for name in names)
