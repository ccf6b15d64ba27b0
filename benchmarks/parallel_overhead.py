"""Overhead of sharding: one GRPO step (LoRA and full) of a tiny model on 1, 2, 4 and 8 fake CPU devices.

    python benchmarks/parallel_overhead.py   # 12 compiles + timings: ~3.5 min on a busy 2-core VM; writes RESULTS_parallel.md (merged by hand into RESULTS.md)

Fake devices share the same cores, so no speed-up is expected: the figures show
what the partitioned program and its collectives cost over the plain `jax.jit`
step. GPU figures (MFU for 0.5B-1.5B models) need real accelerators.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's `kernels`, not benchmarks/kernels.py
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import datetime  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from rft_jax.grpo import GRPOLossConfig, OptimizerConfig, make_optimizer  # noqa: E402
from rft_jax.hugepages import reexec_with_hugepages  # noqa: E402
from rft_jax.model import ModelConfig, init_params  # noqa: E402
from rft_jax.model.lora import LoraConfig, init_lora  # noqa: E402
from rft_jax.parallel import MeshConfig, make_mesh, place  # noqa: E402
from rft_jax.train.sharded_step import jit_sharded_train_step, step_shardings  # noqa: E402
from rft_jax.train.step import RolloutBatch, StepSettings, TrainState, jit_train_step  # noqa: E402

TINY = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                   head_dim=8)
B, G, C, P = 8, 4, 16, 8
LAYOUTS = [("plain jit", None, 1), ("fsdp=1", MeshConfig(fsdp=1), 1), ("fsdp=2", MeshConfig(fsdp=2), 2),
           ("fsdp=4", MeshConfig(fsdp=4), 4), ("fsdp=8", MeshConfig(fsdp=8), 8),
           ("data=2 fsdp=2 tensor=2", MeshConfig(data=2, fsdp=2, tensor=2), 8)]
REPEATS = 10


def batch() -> RolloutBatch:
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, 64, (B, G, C)).astype(np.int32)
    return RolloutBatch(rng.integers(3, 64, (B, P)).astype(np.int32), np.ones((B, P), bool), tokens,
                        np.ones((B, G, C), bool), np.zeros((B, G, C), np.float32),
                        rng.standard_normal((B, G)).astype(np.float32), np.zeros((B, G), bool)).with_loss_mask()


def step_ms(mode: str, layout: MeshConfig | None, devices: int) -> float:
    params = init_params(TINY, jax.random.key(0), std=0.2)
    opt = make_optimizer(OptimizerConfig(learning_rate=1e-3), 100)
    trainable, frozen = (init_lora(TINY, LoraConfig(rank=4), jax.random.key(1)), params) if mode == "lora" else (
        params, None)
    state = TrainState(trainable, opt.init(trainable), jnp.int32(0))
    settings = StepSettings(TINY, GRPOLossConfig(), 1.0 if mode == "lora" else None, 1.0, "float32", remat=False)
    data = jax.tree.map(jnp.asarray, batch())
    if layout is None:
        fn = jit_train_step(opt, settings)
    else:
        sh = step_shardings(make_mesh(layout, jax.devices()[:devices]), opt, state, frozen, None, B, mode == "lora")
        state, frozen, data = place((state, frozen, data), (sh.state, sh.frozen, sh.batch))
        fn = jit_sharded_train_step(opt, settings, sh)
    state, m = fn(state, frozen, None, data)  # compile
    jax.block_until_ready(m)
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        state, m = fn(state, frozen, None, data)
        jax.block_until_ready((state, m))
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main() -> None:
    rows = []
    for name, layout, devices in LAYOUTS:
        lora, full = step_ms("lora", layout, devices), step_ms("full", layout, devices)
        rows.append((name, devices, lora, full))
        print(f"{name:24s} {devices} devices  lora {lora:7.2f} ms  full {full:7.2f} ms", flush=True)
    base_lora, base_full = rows[0][2], rows[0][3]
    table = ["| layout | devices | LoRA step (ms) | vs plain jit | full step (ms) | vs plain jit |",
             "|---|---|---|---|---|---|"]
    table += [f"| {n} | {d} | {lo:.2f} | {lo / base_lora:.2f}x | {fu:.2f} | {fu / base_full:.2f}x |"
              for n, d, lo, fu in rows]
    text = "\n".join(table)
    print(text)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}"
    out = Path(__file__).with_name("RESULTS_parallel.md")
    out.write_text(
        "# Sharding overhead (benchmarks/parallel_overhead.py)\n\n"
        f"Date: {datetime.date.today()}. Machine: 2-core Intel Xeon VM, shared with another job, no GPU "
        f"({machine}). Tiny model (D=32, 2 layers, V=64), B={B} prompts x G={G} x C={C} tokens, float32, "
        f"median of {REPEATS} steps after compilation.\n\n"
        "The fake devices share the same 2 cores, so no speed-up is expected: the ratio is the cost of the "
        "partitioned program (collectives, resharding) on a model far too small to hide it.\n\n"
        f"{text}\n\n"
        "Not measured: GPU step time and MFU for 0.5B-1.5B models on 1-8 GPUs (no GPU in this session).\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    reexec_with_hugepages()  # the same setting as the `rft-jax` commands (rft_jax/hugepages.py)
    main()
