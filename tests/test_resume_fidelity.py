"""--resume picks a run up where it stopped: its records (each step once), its clock, its alarms, its base row,
and its last complete checkpoint after a kill -9 in the middle of a save."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.experimental.compilation_cache import compilation_cache

from rft_jax.checkpoint.store import RunCheckpoints
from rft_jax.monitoring import MetricsWriter, names
from rft_jax.train import loop
from rft_jax.train.config import CheckpointConfig
from rft_jax.train.hooks import Hook
from rft_jax.train.report_table import before_after_markdown
from tests.test_train_run import ROOT, _adapter, tiny_config, tiny_model  # noqa: F401  (a fixture)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in _lines(run_dir / "metrics.jsonl")]


def _die_after(m: pytest.MonkeyPatch, step: int) -> None:
    """The run raises once step `step` is logged, before its checkpoint (hooks run in order)."""
    real = loop.logging_hooks

    def hooks(cfg, writer):
        def die(ctx):
            if ctx.step == step:
                raise RuntimeError("killed")
        return [*real(cfg, writer), Hook("die", die)]

    m.setattr(loop, "logging_hooks", hooks)


def _checkpoint_meta(run_dir: Path, step: int) -> dict:
    manager = ocp.CheckpointManager(run_dir.absolute() / "checkpoints" / "latest")
    try:
        return dict(manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
    finally:
        manager.close()


@contextlib.contextmanager
def _compiled_once(cache_dir: Path):
    """The attempts of one run compile the same programs: a persistent cache lets the later ones load them."""
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    old = {name: getattr(jax.config, name) for name in names}
    jax.config.update(names[0], str(cache_dir))
    jax.config.update(names[1], 0.0)
    compilation_cache.reset_cache()
    try:
        yield
    finally:
        for name, value in old.items():
            jax.config.update(name, value)
        compilation_cache.reset_cache()


@pytest.fixture(scope="module")
def resumed_twice(tiny_model, tmp_path_factory):  # noqa: F811
    """Three attempts of one 4-step run (checkpoint every 2 steps, a 2-prompt test split):
    1. dies after step 1, before any checkpoint;  2. resumes (from the top) and dies after step 3;
    3. resumes from the checkpoint of step 2 with a time budget its first attempts already spent."""
    run_dir = tmp_path_factory.mktemp("resumed")
    cfg = tiny_config(tiny_model, str(run_dir), max_steps=4, checkpoint=CheckpointConfig(interval=2), export=False,
                      rollout_log_interval=1)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, task=dataclasses.replace(cfg.data.task,
                                                                                                num_test=2)))
    seen = {}
    with _compiled_once(tmp_path_factory.mktemp("jax_cache")):
        _attempts(cfg, run_dir, seen)
    return run_dir, seen


def _attempts(cfg, run_dir: Path, seen: dict) -> None:
    for attempt, die in ((1, 1), (2, 3)):
        with pytest.MonkeyPatch.context() as m:
            _die_after(m, die)
            with pytest.raises(RuntimeError, match="killed"):
                loop.run(dataclasses.replace(cfg, resume=attempt > 1))
        seen[attempt] = {"steps": _steps(run_dir), "alarms": _lines(run_dir / "alarms.jsonl")}
    seen["meta"] = _checkpoint_meta(run_dir, 2)
    seen["base"] = json.loads((run_dir / "eval_base.json").read_text())["metrics"]
    with pytest.MonkeyPatch.context() as m:  # as if the first attempts had taken 10^6 s
        restore = RunCheckpoints.restore
        m.setattr(RunCheckpoints, "restore",
                  lambda self, *a: (lambda state, meta: (state, {**meta, "elapsed_s": 1e6}))(*restore(self, *a)))
        seen["results"] = loop.run(dataclasses.replace(cfg, resume=True, time_budget_s=1e5))


def test_a_resume_before_the_first_checkpoint_starts_again_without_duplicate_rows(resumed_twice):
    run_dir, seen = resumed_twice
    assert seen[1]["steps"] == [0, 1]
    assert seen[2]["steps"] == [0, 1, 2, 3]  # not 0, 1, 0, 1, 2, 3


def test_the_steps_after_the_checkpoint_are_logged_once_and_none_is_missing(resumed_twice):
    run_dir, seen = resumed_twice
    rows = _lines(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert "val/reward/mean" in rows[0] and all("actor/pg_loss" in r for r in rows[1:])
    assert sorted(p.name for p in (run_dir / "rollouts").iterdir()) == [f"step_{s}.jsonl" for s in (1, 2, 3)]


def test_the_time_budget_counts_the_earlier_attempts(resumed_twice):
    run_dir, seen = resumed_twice
    assert seen["meta"]["elapsed_s"] > 0  # the checkpoint carries the run's clock
    results = seen["results"]
    assert results["final_step"] == 3  # 10^6 s spent of 10^5: the first step after the resume is the last
    assert results["wall_seconds"] >= 1e6
    assert _checkpoint_meta(run_dir, 3)["elapsed_s"] >= 1e6


def test_the_before_after_table_keeps_its_base_row(resumed_twice):
    _, seen = resumed_twice
    results = seen["results"]
    assert results["base"] == seen["base"] and "final" in results
    assert before_after_markdown(results).startswith("| metric | base | final |")


def test_alarms_are_announced_once_across_attempts(resumed_twice):
    run_dir, seen = resumed_twice
    assert seen[1]["alarms"], "no alarm fired in the first attempt: the test needs one that does"
    events = _lines(run_dir / "alarms.jsonl")
    assert len({e["name"] for e in events}) == len(events), events
    assert events[: len(seen[1]["alarms"])] == seen[1]["alarms"]  # the first announcement stands


def _write(writer: MetricsWriter, steps: range) -> list[dict]:
    """Entropy 1.0 for five steps, then 0.01 (a collapse measured against the run's start); always truncated."""
    return [writer.write(s, {names.ENTROPY: 1.0 if s <= 5 else 0.01, names.RESPONSE_CLIP_RATIO: 0.5})
            for s in steps]


def test_a_resumed_writer_replays_the_alarm_history_it_kept(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    kwargs = {"console": False, "tensorboard": False}
    with MetricsWriter(straight, **kwargs) as w:
        expected = _write(w, range(1, 9))
    with MetricsWriter(resumed, **kwargs) as w:
        _write(w, range(1, 8))  # crashed after step 7; its checkpoint is step 5's
    with MetricsWriter(resumed, keep_through=5, **kwargs) as w:
        redone = _write(w, range(6, 9))
    assert redone == expected[5:]  # the collapse is seen against the entropy of steps 1-5
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
    assert strip(_lines(resumed / "metrics.jsonl")) == strip(_lines(straight / "metrics.jsonl"))
    assert _lines(resumed / "alarms.jsonl") == _lines(straight / "alarms.jsonl")
    assert [e["name"] for e in _lines(straight / "alarms.jsonl")] == ["truncation", "entropy_collapse"]


def test_a_half_written_checkpoint_is_ignored_and_cleared_on_resume(tmp_path):
    """What a kill -9 inside a save leaves: the step's temporary folder, never renamed to its final name."""
    tree = {"w": jnp.arange(3.0)}
    ckpt = RunCheckpoints(tmp_path, keep_best=2)
    ckpt.save_latest(2, tree, {"best_val": None, "bad_evals": 0, "elapsed_s": 5.0})
    ckpt.save_best(2, tree, {}, 0.5)
    ckpt.save_best(4, {"w": jnp.arange(3.0) + 4}, {}, 0.9)  # from the attempt that died during step 4's save
    ckpt.close()
    latest = tmp_path / "checkpoints" / "latest"
    half = latest / "4.orbax-checkpoint-tmp-1234"
    (half / "state").mkdir(parents=True)
    (half / "state" / "partial").write_bytes(b"\0" * 10)

    ckpt = RunCheckpoints(tmp_path, keep_best=2)
    assert ckpt.latest_step() == 2
    state, meta = ckpt.restore(ckpt.latest, 2, tree)
    np.testing.assert_array_equal(state["w"], tree["w"])
    assert meta["elapsed_s"] == 5.0
    assert ckpt.forget_best_after(2) == [4] and ckpt.best_step() == 2
    ckpt.save_latest(4, {"w": jnp.arange(3.0) + 1}, meta)  # the redone step saves over the debris
    ckpt.close()
    assert sorted(p.name for p in latest.iterdir()) == ["4"]


KILL_DURING_SAVE = """
import os, signal, sys
from orbax.checkpoint._src.path import atomicity

finalize = atomicity.AtomicRenameTemporaryPath.finalize

async def finalize_or_die(self):  # every file of the step is in its temporary folder; the rename is next
    final = self.get_final()
    if final.parent.name == "latest" and final.name == os.environ["KILL_AT_STEP"]:
        os.kill(os.getpid(), signal.SIGKILL)
    return await finalize(self)

atomicity.AtomicRenameTemporaryPath.finalize = finalize_or_die
from rft_jax.cli.train import main
sys.exit(main(sys.argv[2:]))  # argv: -c train FLAGS...
"""


def _train_args(model: str, out_dir: Path) -> list[str]:
    return ["train", "--model.name", model, "--model.compute-dtype", "float32", "--data.task.name", "arithmetic",
            "--data.task.num-train", "16", "--data.task.num-val", "4", "--data.task.num-test", "0",
            "--data.max-prompt-tokens", "128", "--reward", "tests.toy_rewards:brevity", "--no-require-signal",
            "--batch-size", "2", "--max-steps", "6", "--sampling.samples-per-prompt", "4",
            "--sampling.max-new-tokens", "16", "--evaluation.interval", "100", "--checkpoint.interval", "2",
            "--optimizer.learning-rate", "0.01", "--out-dir", str(out_dir)]


@pytest.mark.slow  # three whole runs in subprocesses (two side by side): about 90 s on two cores
def test_a_kill_9_during_a_checkpoint_save_resumes_from_the_last_complete_one(tiny_model, tmp_path):  # noqa: F811
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XLA_FLAGS": "", "KILL_AT_STEP": "4"}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    with open(tmp_path / "straight.log", "wb") as sink:
        uninterrupted = subprocess.Popen([sys.executable, "-m", "rft_jax.cli", *_train_args(tiny_model, straight)],
                                         env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
    died = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, *_train_args(tiny_model, killed)], env=env,
                          cwd=ROOT, capture_output=True, timeout=600)
    assert died.returncode == -9, died.stdout.decode()[-2000:] + died.stderr.decode()[-2000:]
    latest = killed / "checkpoints" / "latest"
    assert "2" in os.listdir(latest) and any(".orbax-checkpoint-tmp" in p for p in os.listdir(latest))
    assert _steps(killed) == [0, 1, 2, 3, 4]

    resumed = subprocess.run([sys.executable, "-m", "rft_jax.cli", *_train_args(tiny_model, killed), "--resume"],
                             env=env, cwd=ROOT, capture_output=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout.decode()[-3000:]
    assert "resumed from step 2" in resumed.stdout.decode()
    assert _steps(killed) == [0, 1, 2, 3, 4, 5, 6]
    assert os.listdir(latest) == ["6"]
    assert uninterrupted.wait(timeout=600) == 0, (tmp_path / "straight.log").read_text()[-2000:]
    a, b = _adapter(straight), _adapter(killed)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)  # bitwise on CPU
