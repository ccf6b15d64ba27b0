"""Two real processes on 127.0.0.1 form one JAX cluster (CPU, gloo collectives), each with 2 devices,
and run two GRPO steps on a global batch split between them; the result equals a single process running
the same steps on the same 4-device mesh, and their orbax checkpoint restores in a single process.

Every run is a subprocess of tests/parallel_worker.py: the pytest process only restores the checkpoint.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import parallel_worker

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300
GLOBAL_DEVICES = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(pid: int, num: int, port: str, out_dir: Path) -> subprocess.Popen:
    # PJRT_NPROC (conftest) comes along in os.environ. The programs are tiny and compile-bound: LLVM -O0
    # halves the time of each run, and every run here uses the same flags.
    flags = f"--xla_force_host_platform_device_count={GLOBAL_DEVICES // num} --xla_backend_optimization_level=0"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags}
    return subprocess.Popen([sys.executable, str(ROOT / "tests" / "parallel_worker.py"), str(pid), str(num), port,
                             str(out_dir)], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait(procs: list[subprocess.Popen]) -> list[str]:
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=TIMEOUT_S)[0].decode(errors="replace"))
    finally:
        for p in procs:  # a failed or hung peer must not outlive the test
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-4000:]
    return logs


@pytest.mark.slow  # the hand-built loop; tests/test_parallel_train_cli.py runs `rft-jax train` itself in the default suite
def test_two_processes_match_one_and_their_checkpoint_restores_in_one(tmp_path):
    single_dir = tmp_path / "single"
    single_dir.mkdir()
    port = str(_free_port())
    procs = [_start(i, 2, port, tmp_path) for i in range(2)] + [_start(0, 1, port, single_dir)]
    _wait(procs)
    got = json.loads((tmp_path / "result.json").read_text())
    want = json.loads((single_dir / "result.json").read_text())
    assert got["processes"] == 2 and want["processes"] == 1
    assert got["tokens"] == want["tokens"]  # the same samples from the same keys
    np.testing.assert_allclose(got["losses"], want["losses"], rtol=1e-5, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6), got["trainable"],
                 want["trainable"], is_leaf=lambda x: isinstance(x, list))

    from rft_jax.checkpoint.store import RunCheckpoints
    from rft_jax.grpo import OptimizerConfig, make_optimizer
    from rft_jax.model import ModelConfig
    from rft_jax.model.lora import LoraConfig, init_lora
    from rft_jax.train.step import TrainState

    lora = init_lora(ModelConfig(**parallel_worker.TINY), LoraConfig(rank=4), jax.random.key(7))
    like = TrainState(lora, make_optimizer(OptimizerConfig(learning_rate=1e-2), 10).init(lora), jnp.int32(0))
    ckpt = RunCheckpoints(tmp_path)
    restored, meta = ckpt.restore(ckpt.latest, ckpt.latest_step(), like)
    ckpt.close()
    assert int(restored.step) == 2 and meta == {"note": "two-process run"}
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=2e-6),
                 restored.trainable, jax.tree.map(np.asarray, got["trainable"], is_leaf=lambda x: isinstance(x, list)))
