"""`rft-jax train` itself as two processes forming one JAX cluster (127.0.0.1, gloo CPU collectives, 2 devices
each) reaches the same parameters, metrics and evaluations as the same run in one process on 4 devices, and
leaves the same files: process 0 writes the run directory, process 1 writes nothing but its checkpoint shards.

The run has everything that touches the run directory or takes a collective: an earlier run to set aside,
a generated task, base/validation/final evaluations and the signal check (3 prompts: uneven parts over
2 processes), rollout logs, a checkpoint and a best checkpoint every step, and the export. 55 s on 2 cores
(up to 3 min when other jobs share them), most of it three processes compiling at once.
Process 1 runs under a Python audit hook that records every file it opens for writing, creates, moves or
deletes (orbax's tensorstore writes, in C++, are the ones it cannot see).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from rft_jax.rewards import RewardResult
from tests.test_parallel_multiprocess import _free_port, _wait
from tests.test_sft_chain import tiny_hf_model

ROOT = Path(__file__).resolve().parents[1]
# The CLI as `python -m rft_jax.cli` runs it, with an audit hook recording writes under a folder.
AUDITED_CLI = """
import atexit, json, os, sys
log, watched = sys.argv[1], os.path.realpath(sys.argv[2])
writes = []
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
def audit(event, args):
    if event == "open":
        path, mode, flags = args
        if not (any(c in (mode or "") for c in "wax+") or (mode is None and (flags or 0) & WRITE_FLAGS)):
            return
        paths = [path]
    elif event in ("os.mkdir", "os.remove", "os.rmdir", "os.truncate", "shutil.rmtree", "os.symlink", "os.link"):
        paths = [args[0]]
    elif event in ("os.rename", "shutil.move", "shutil.copyfile"):
        paths = [args[0], args[1]]
    else:
        return
    for p in paths:
        if isinstance(p, (str, bytes, os.PathLike)):
            p = os.path.realpath(os.fsdecode(p))
            if p.startswith(watched + os.sep) and p != os.path.realpath(log):
                writes.append(f"{event} {os.path.relpath(p, watched)}")
atexit.register(lambda: open(log, "w").write(json.dumps(writes)))
sys.addaudithook(audit)
sys.argv = ["rft-jax", *sys.argv[3:]]
from rft_jax.cli import main
sys.exit(main())
"""
TIMING = re.compile(r"^(time|timing_s/.*|perf/.*|eval_seconds|wall_seconds)$")  # clocks, not results


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return tiny_hf_model(tmp_path_factory.mktemp("tiny_model"))


def _train_args(model: str, out_dir: Path) -> list[str]:
    return ["train", "--model.name", model, "--model.compute-dtype", "float32", "--data.task.name", "arithmetic",
            "--data.task.num-train", "12", "--data.task.num-val", "3", "--data.task.num-test", "3",
            "--data.max-prompt-tokens", "200", "--reward", "tests.toy_rewards:brevity", "--batch-size", "4",
            "--max-steps", "2", "--sampling.samples-per-prompt", "2", "--sampling.max-new-tokens", "8",
            "--evaluation.interval", "1", "--evaluation.min-delta", "-1", "--checkpoint.interval", "1",
            "--rollout-log-interval", "1", "--kl-monitor-interval", "2", "--optimizer.learning-rate", "0.01",
            # Adam moves a parameter by +-lr whatever its gradient's size, so a gradient near 0 whose last bits
            # differ (a sum over 2 processes in another order) could move it by up to 2 lr: eps makes such
            # small-gradient updates proportional to the gradient.
            "--optimizer.eps", "1e-3", "--out-dir", str(out_dir)]


def _start(args: list[str], devices: int, cwd: Path, audit: tuple[Path, Path] | None = None) -> subprocess.Popen:
    # LLVM -O0, as tests/test_parallel_multiprocess.py: the programs are tiny and compile-bound.
    flags = f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags}
    cmd = [sys.executable, "-m", "rft_jax.cli", *args]
    if audit is not None:
        cmd = [sys.executable, "-c", AUDITED_CLI, *map(str, audit), *args]
    cwd.mkdir()
    return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _files(run_dir: Path) -> set[str]:
    """The run's files, with the names no two runs share generalised: TensorBoard's event file (host, clock),
    orbax's content-addressed chunks, and orbax's per-process shards (which every process must write)."""
    names = set()
    for p in run_dir.rglob("*"):
        if p.is_file():
            name = re.sub(r"events\.out\.tfevents\..*", "events.out.tfevents.*", str(p.relative_to(run_dir)))
            names.add(re.sub(r"process_\d+", "process_*", re.sub(r"/d/[0-9a-f]+$", "/d/*", name)))
    return names


def _writers(run_dir: Path) -> set[str]:
    """The processes whose shards orbax wrote into the run's checkpoints."""
    return {m.group(1) for p in run_dir.rglob("*process_*") if (m := re.search(r"process_(\d+)$", p.name))}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _assert_close(got, want, where: str, rtol: float = 1e-4, atol: float = 5e-5) -> None:
    """Equal JSON documents, numbers to a tolerance, clocks left out. Measured: 5e-6 relative at most; the
    atol is for figures that are themselves rounding noise (mismatch/max_abs_logp_diff, about 1e-5)."""
    if isinstance(want, dict):
        keys = {k for k in want if not TIMING.match(k)}
        assert {k for k in got if not TIMING.match(k)} == keys, where
        for k in keys:
            _assert_close(got[k], want[k], f"{where}/{k}", rtol, atol)
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want)):
            _assert_close(a, b, f"{where}[{i}]", rtol, atol)
    elif isinstance(want, float) and not isinstance(got, str):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=where)
    else:
        assert got == want, where


# Slow (90 s of three processes compiling on a 2-core machine: it pushed `make test` past 15 minutes);
# `make test-slow` runs it. tests/test_monitoring_writer.py checks that a non-primary process writes nothing.
@pytest.mark.slow
def test_two_processes_of_rft_jax_train_match_one_and_only_process_0_writes(tiny_model, tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    two.mkdir()  # an earlier run in the folder: process 0 sets it aside before anyone touches the folder
    (two / "metrics.jsonl").write_text('{"step": 1}\n')
    (two / "config.json").write_text("{}")
    cluster = ["--distributed.coordinator-address", f"127.0.0.1:{_free_port()}", "--distributed.num-processes", "2"]
    audit_log = tmp_path / "process_1_writes.json"
    procs = [_start([*_train_args(tiny_model, two), *cluster, "--distributed.process-id", "0"], 2, tmp_path / "cwd0"),
             _start([*_train_args(tiny_model, two), *cluster, "--distributed.process-id", "1"], 2, tmp_path / "cwd1",
                    audit=(audit_log, tmp_path)),
             _start(_train_args(tiny_model, one), 4, tmp_path / "cwd_one")]
    logs = _wait(procs)
    assert "process 1 of 2" in logs[1], logs[1][-2000:]

    # Process 1 wrote nothing itself: no file of the run, the earlier run or its working directory.
    writes = json.loads(audit_log.read_text())
    assert writes and all(w.split(" ", 1)[1].startswith("two/checkpoints/") for w in writes), writes
    assert not any((tmp_path / "cwd1").iterdir())
    previous = [p for p in tmp_path.iterdir() if p.name.startswith("two.previous-")]
    assert len(previous) == 1 and _files(previous[0]) == {"metrics.jsonl", "config.json"}

    # The same files, none per process, and the same records.
    files = _files(one)
    assert _files(two) == files and not any("tmp" in f for f in files)
    assert _writers(two) == {"0", "1"} and _writers(one) == {"0"}
    assert {"eval_base.json", "eval_base_val.json", "eval_val.json", "eval_final.json", "results.json",
            "rollouts/step_2.jsonl", "export/adapter/adapter_model.safetensors", "checkpoints/latest/2/state/_METADATA"
            } <= files
    assert any(f.startswith("checkpoints/best/") for f in files)  # every validation counts as improved here
    two_rows, one_rows = _jsonl(two / "metrics.jsonl"), _jsonl(one / "metrics.jsonl")
    assert [r["step"] for r in one_rows] == [0, 1, 2]
    assert "baseline/any_positive_share" in one_rows[0] and "val/reward/mean" in one_rows[2]
    assert "actor/ref_kl" in one_rows[2] and "actor/ref_kl" in two_rows[2]  # the KL monitor, on the mesh
    _assert_close(two_rows, one_rows, "metrics.jsonl")
    for name in sorted(f for f in files if f.startswith("eval_") or f.startswith("rollouts/")):
        doc = _jsonl if name.endswith(".jsonl") else lambda p: json.loads(p.read_text())
        _assert_close(doc(two / name), doc(one / name), name)
    _assert_close(json.loads((two / "results.json").read_text()), json.loads((one / "results.json").read_text()),
                  "results.json")

    # The final adapters (the export's) agree to 1e-3 of a step's move (lr 1e-2); 2.1e-6 apart when measured.
    got, want = (load_file(str(d / "export" / "adapter" / "adapter_model.safetensors")) for d in (two, one))
    assert got.keys() == want.keys()
    assert all(np.abs(w).max() > 0 for k, w in want.items() if "lora_B" in k)  # training moved the adapters
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5, err_msg=k)


@pytest.mark.parametrize("processes", [1, 2, 3])
def test_uneven_parts_give_every_item_to_one_process_in_order(monkeypatch, processes):
    from rft_jax.parallel import distributed

    monkeypatch.setattr(distributed.jax, "process_count", lambda: processes)
    for n in (0, 1, 3, 4, 7):
        parts = []
        for index in range(processes):
            monkeypatch.setattr(distributed.jax, "process_index", lambda index=index: index)
            parts.append(list(range(n))[distributed.process_part(n)])
        assert [i for part in parts for i in part] == list(range(n))
        assert max(map(len, parts)) == -(-n // processes)  # ceil(n / P): the first parts are full


def test_evaluation_scores_whole_groups_on_each_process(monkeypatch):
    """A pairwise judge compares one example's samples: a process scores whole groups, never part of one."""
    from rft_jax.evaluation import evaluate
    from rft_jax.parallel import distributed

    class GroupSizes:  # scores each text with the size of its example's group in the call
        def score_batch(self, examples, texts):
            return [RewardResult(float(sum(e == ex for e in examples))) for ex in examples]

    monkeypatch.setattr(distributed.jax, "process_count", lambda: 2)
    examples = [f"ex{i}" for i in range(5) for _ in range(3)]  # 5 examples x 3 samples over 2 processes
    parts = []
    for index in range(2):
        monkeypatch.setattr(distributed.jax, "process_index", lambda index=index: index)
        monkeypatch.setattr(evaluate, "gather_objects", lambda local: local)  # this process's part only
        parts.append(evaluate.score_in_parts({"r": GroupSizes()}, examples, ["t"] * 15, group=3)["r"])
    assert [len(p) for p in parts] == [9, 6]  # 3 groups, then 2
    assert {r.score for p in parts for r in p} == {3.0}
