"""benchmarks/device_suite.sh: its arguments, its plan, its counting, and (slow) its smoke run end to end."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.device_decode import decode_step_bytes, mean_context
from benchmarks.device_mfu import Shape, train_step_flops
from benchmarks.device_report import main as report_main
from rft_jax.model import ModelConfig
from rft_jax.model.lora import LoraConfig

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "benchmarks" / "device_suite.sh"
# Hand-counted below: q 4x4, k 4x2, v 4x2, o 4x4, gate/up 4x8, down 8x4 = 144 weights a layer, N = 288.
TINY = ModelConfig(vocab_size=10, hidden_size=4, intermediate_size=8, num_layers=2, num_heads=2, num_kv_heads=1,
                   head_dim=2, tie_embeddings=True)


def suite(*args: str, env: dict | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SUITE), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHON": sys.executable, **(env or {})})


@pytest.fixture
def wheel_dir(tmp_path) -> Path:
    folder = tmp_path / "whl"
    folder.mkdir()
    (folder / "tyro-1.0.17-py3-none-any.whl").write_bytes(b"")  # only its name is read by a dry run
    return folder


def test_syntax():
    subprocess.run(["bash", "-n", str(SUITE)], check=True)


def test_dry_run_prints_every_part(wheel_dir, tmp_path):
    out = suite(str(wheel_dir), str(tmp_path / "out"), "--dry-run")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert not (tmp_path / "out").exists()  # a dry run creates nothing
    expected = ["[install]", "pip install -q --no-index --no-deps", f"--target /tmp/rft_jax_site {wheel_dir}/tyro-",
                "[env]", "-m benchmarks.device_env --json WORK/env.json",
                "[gpu_tests]", "-m pytest -q -m gpu", "tests/test_kernels_fused_logprob.py",
                "[kernels]", "-m benchmarks.kernels --sizes 8192:151936:896 --memory-sizes none --dtype bfloat16",
                "[mfu_lora]", "-m benchmarks.device_mfu --mode lora --logprob-impl pallas --fallback-impl xla_chunked",
                "[mfu_full]", "--mode full", "[decode]", "-m benchmarks.device_decode --json WORK/decode.json",
                "[report]", "--parts install,env,gpu_tests,kernels,mfu_lora,mfu_full,decode",
                "deadline 465 s", f"PYTHONPATH={REPO}:/tmp/rft_jax_site"]
    for piece in expected:
        assert piece in text, piece
    # The budgets fit the deadline: the whole suite ends within 8 minutes, kill grace included.
    budgets = [int(line.split("budget ")[1].split(" s")[0]) for line in text.splitlines() if " budget " in line]
    assert len(budgets) == 7 and sum(budgets) <= 465


def test_dry_run_smoke_without_wheels(tmp_path):
    out = suite("-", str(tmp_path), "--smoke", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "[install]" not in out.stdout and "rft_jax_site" not in out.stdout
    assert out.stdout.count("--smoke") == 4  # env, both MFU modes, decode; kernels get tiny --sizes
    assert "--sizes 512:8192:64" in out.stdout


def test_dry_run_only_some_parts(wheel_dir, tmp_path):
    """A rerun of some parts (what a device session with minutes left would do) still installs the wheels."""
    out = suite(str(wheel_dir), str(tmp_path), "--only", "mfu_full,decode", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert [line.split("]")[0] + "]" for line in out.stdout.splitlines() if line.startswith("[")] == \
        ["[install]", "[mfu_full]", "[decode]", "[report]"]


@pytest.mark.parametrize("args, message", [
    (["{missing}", "{tmp}"], "does not exist: fill it with device_suite.sh --download-wheels"),
    (["{empty}", "{tmp}"], "holds no .whl files"),
    (["-", "{tmp}/no/such/parent"], "does not exist, nor does its parent folder"),
    (["-", "{tmp}", "--bogus"], "unknown option --bogus"),
    (["-"], "usage: device_suite.sh WHEEL_DIR OUT_DIR"),
    (["--download-wheels"], "--download-wheels takes one folder"),
    (["-", "{tmp}", "--only", "mfu"], "--only: no part named mfu"),
])
def test_bad_arguments(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    paths = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "tmp": tmp_path}
    out = suite(*(a.format(**paths) for a in args), "--dry-run")
    assert out.returncode == 2
    assert message in out.stderr and out.stdout == ""


def test_wheel_pins_follow_requirements():
    """The wheels carry requirements.txt's own pins, so the GPU runs the versions CI tests."""
    pins = dict(line.split("==") for line in suite("--list-wheels").stdout.split())
    required = {k.lower(): v for k, v in (line.split("==") for line in (REPO / "requirements.txt").read_text().split()
                                          if "==" in line)}
    shared = {name.lower() for name in pins} & set(required)
    assert {"tyro", "gguf", "jsonschema", "tensorboardx", "starlette", "uvicorn"} <= shared
    assert all(pins_v == required[name.lower()] for name, pins_v in pins.items() if name.lower() in shared)


def test_train_step_flops_by_hand():
    s = Shape(B=1, G=2, P=3, C=4, steps=1)
    # T = 1*3 + 2*3 = 9 tokens through the layers, 8 scored; keys = 6 (prompt) + 2 * (3*3 + 3*4/2) = 36,
    # attention forward 4*H*K*L*36 = 1152.
    full = train_step_flops(TINY, s, None)
    assert full == {"projections": 6 * 288 * 9, "unembedding": 6 * 4 * 10 * 8, "attention": 3 * 1152, "lora": 0,
                    "total": 15552 + 1920 + 3456}
    # LoRA r=1 on all 7: sum(in + out) = 8 + 6 + 6 + 8 + 12 + 12 + 12 = 64 a layer.
    lora = train_step_flops(TINY, s, LoraConfig(rank=1, alpha=1.0))
    assert lora == {"projections": 4 * 288 * 9, "unembedding": 4 * 4 * 10 * 8, "attention": 3456,
                    "lora": 6 * 64 * 2 * 9, "total": 10368 + 1280 + 3456 + 6912}


def test_decode_step_bytes_by_hand():
    assert TINY.num_params == 348  # 2 layers x (48 attention + 96 MLP + 8 norm) + 40 embedding + 4 final norm
    assert mean_context(3, 4) == 5.5  # steps 0..3 see 4, 5, 6, 7 keys
    # bf16 weights 348 * 2; KV 3 sequences x 5.5 tokens x (2 x 2 layers x 1 head x 2 dims x 2 bytes).
    assert decode_step_bytes(TINY, 3, 5.5, 2, 2) == {"weights": 696, "kv": 264.0, "total": 960.0}
    untied = dataclasses.replace(TINY, tie_embeddings=False)  # the [V, D] table is gathered, not read
    assert decode_step_bytes(untied, 3, 5.5, 2, 2)["weights"] == 696


def test_report_marks_failures(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "env.json").write_text(json.dumps({"rows": [{"figure": "device", "value": "cpu", "goal": "",
                                                         "met": None}], "raw": {}}))
    (work / "env.status").write_text("rc=0 elapsed=3 limit=30")
    (work / "mfu_full.log").write_text("Traceback ...\nRuntimeError: out of memory\n\n")
    (work / "mfu_full.status").write_text("rc=1 elapsed=40 limit=95")
    (work / "decode.log").write_text("compiling\n")
    (work / "decode.status").write_text("rc=124 elapsed=95 limit=95")
    assert report_main([str(work), "--parts", "env,mfu_full,decode,never", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "summary.md").read_text()
    assert "| env | ok | 3 | device | cpu |" in table
    assert "| mfu_full | FAILED (exit 1) | 40 | error | RuntimeError: out of memory |" in table
    assert "| decode | FAILED (timed out after 95 s) |" in table
    assert "| never | NOT RUN |" in table
    assert json.loads((tmp_path / "summary.json").read_text())["parts"][1]["status"] == "FAILED (exit 1)"


@pytest.mark.slow
def test_smoke_end_to_end(tmp_path):
    """Every part at tiny sizes on this backend, through the script, as the GPU run would go."""
    t = time.perf_counter()
    out = suite("-", str(tmp_path), "--smoke", env={"XLA_FLAGS": ""}, timeout=1000)
    print(out.stdout[-6000:], f"\nsmoke suite: {time.perf_counter() - t:.0f} s")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [p["status"] for p in summary["parts"]] == ["ok"] * 6
    assert {"summary.md", "summary.json", "parts.tar.gz"} <= {p.name for p in tmp_path.iterdir()}
