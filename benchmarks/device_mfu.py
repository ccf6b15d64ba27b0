"""MFU of one GRPO update, through the jitted step `rft-jax train` calls, on a Qwen2.5-0.5B-shaped model.

    python -m benchmarks.device_mfu --mode lora|full [--smoke] [--logprob-impl auto] [--json PATH]

The model has Qwen2.5-0.5B's shapes (hidden 896, 24 layers, 14 heads, 2 KV heads, head dim 64,
MLP 4864, vocabulary 151,936, tied embeddings, q/k/v bias) and random weights. `build_trainer`
builds the run's trainer from a `TrainConfig` (bf16 compute on a GPU, LoRA r=16 on every
projection or full fine-tuning with Adam, beta = 0, one update per batch), and the timed call is
`trainer.step_fn`, the sharded jitted train step that `Trainer.update` calls on every batch
(rft_jax/train/trainer.py). The batch is synthetic: B prompts of P tokens, G completions of C
tokens each, every token real. The first call compiles; the median of the next `steps` counts.

Model FLOPs per step (`train_step_flops`; matmuls only, causal attention counted as needed):
  T = B*P + B*G*(C-1) tokens run through the layers (each prompt once, every completion token but
  the last), B*G*C positions scored by the unembedding; N = the projections' weights (q, k, v, o,
  gate, up, down over L layers); A = attention's forward 4*H*K*L*(keys each query attends to);
  full:  6*N*T + 6*D*V*(B*G*C) + 3*A
  LoRA:  4*N*T + 4*D*V*(B*G*C) + 3*A + 6*r*sum(in+out)*L*T
(LoRA computes no gradient of the frozen weights: the backward pass is activation gradients only,
plus the adapters' own forward, activation and weight gradients.) MFU = FLOPs / step time / peak,
with the peak both the datasheet's (989 TFLOP/s dense bf16 on an H200) and the matmul ceiling
measured in the same process. Goal (the issue): MFU >= 40%.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.device_env import ceilings
from benchmarks.device_report import print_rows, row, write_part
from rft_jax.grpo import OptimizerConfig
from rft_jax.model import ModelConfig, init_params
from rft_jax.model.lora import LoraConfig
from rft_jax.model.params import projection_shapes
from rft_jax.parallel import make_mesh, place
from rft_jax.rewards.spec import RewardSpec
from rft_jax.rollout.batch import RolloutBatch, short_completion_len
from rft_jax.train.config import SamplingConfig, TrainConfig
from rft_jax.train.memory import RunShape, estimate_memory
from rft_jax.train.trainer import build_trainer

QWEN25_05B = ModelConfig(architecture="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864,
                         num_layers=24, num_heads=14, num_kv_heads=2, head_dim=64, rope_theta=1e6, rms_norm_eps=1e-6,
                         tie_embeddings=True, qkv_bias=True, max_position_embeddings=32768)
SMOKE_MODEL = ModelConfig(architecture="qwen2", vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2,
                          num_heads=4, num_kv_heads=2, head_dim=16, tie_embeddings=True, qkv_bias=True)


@dataclasses.dataclass(frozen=True)
class Shape:
    """B prompts of P tokens, G completions of C tokens; `steps` timed after one compiling call."""

    B: int
    G: int
    P: int
    C: int
    steps: int


# C = 256: the step's activations are about 52 GiB (rft_jax/train/memory.py's estimate; 117 at C = 512).
FULL = Shape(B=8, G=8, P=256, C=256, steps=5)
SMOKE = Shape(B=2, G=2, P=16, C=16, steps=2)


def train_step_flops(m: ModelConfig, s: Shape, lora: LoraConfig | None) -> dict[str, float]:
    """Model FLOPs of one update (module docstring), by part, and their 'total'."""
    shapes = projection_shapes(m)
    n_proj = m.num_layers * sum(i * o for i, o in shapes.values())
    tokens = s.B * s.P + s.B * s.G * (s.C - 1)
    scored = s.B * s.G * s.C
    # keys attended: prompt token i (1-based) sees i; completion token j sees the prompt and j of its own.
    keys = s.B * s.P * (s.P + 1) // 2 + s.B * s.G * ((s.C - 1) * s.P + (s.C - 1) * s.C // 2)
    attn = 4 * m.num_heads * m.head_dim * m.num_layers * keys
    passes = 3 if lora is None else 2  # forward + activation gradients (+ weight gradients when training them)
    out = {"projections": 2 * passes * n_proj * tokens,
           "unembedding": 2 * passes * m.hidden_size * m.vocab_size * scored,
           "attention": 3 * attn, "lora": 0}
    if lora is not None:
        width = sum(sum(shapes[t]) for t in lora.targets)
        out["lora"] = 6 * lora.rank * width * m.num_layers * tokens
    out["total"] = sum(out.values())
    return out


def train_config(mode: str, s: Shape, logprob_impl: str) -> TrainConfig:
    """What `rft-jax train --mode MODE --batch-size B --sampling.samples-per-prompt G ...` would run."""
    cfg = TrainConfig(reward=RewardSpec("math_answer"), mode=mode, lora=LoraConfig(rank=16, alpha=32.0),
                      optimizer=OptimizerConfig(learning_rate=1e-5 if mode == "full" else 1e-4),
                      sampling=SamplingConfig(samples_per_prompt=s.G, max_new_tokens=s.C), batch_size=s.B)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, logprob_impl=logprob_impl))


def synthetic_batch(m: ModelConfig, s: Shape, seed: int = 0) -> RolloutBatch:
    """Random prompts and completions with every token real, random old log-probs and advantages."""
    rng = np.random.default_rng(seed)
    return RolloutBatch(
        prompt_BxP=rng.integers(1, m.vocab_size, (s.B, s.P), dtype=np.int32),
        prompt_mask_BxP=np.ones((s.B, s.P), bool),
        completion_BxGxC=rng.integers(1, m.vocab_size, (s.B, s.G, s.C), dtype=np.int32),
        completion_mask_BxGxC=np.ones((s.B, s.G, s.C), bool),
        old_logp_BxGxC=-rng.exponential(2.0, (s.B, s.G, s.C)).astype(np.float32),
        advantages_BxG=rng.standard_normal((s.B, s.G)).astype(np.float32),
        truncated_BxG=np.zeros((s.B, s.G), bool))


def time_steps(mode: str, m: ModelConfig, s: Shape, logprob_impl: str) -> dict:
    """Seconds of the compiling call and of each timed call of the product's jitted step."""
    cfg = train_config(mode, s, logprob_impl)
    params = init_params(m, jax.random.key(0), jnp.float32)  # float32 master weights, as load_model gives
    trainer, state = build_trainer(cfg, m, params, None, None, make_mesh(cfg.mesh), 100)
    batch = synthetic_batch(m, s)
    short = short_completion_len(batch, cfg.optimizer.grad_accum_steps)  # None: every completion is full
    mb = place(batch.with_loss_mask(), trainer.shardings.batch)  # as Trainer.update places it
    times = []
    for _ in range(s.steps + 1):
        t = time.perf_counter()
        state, metrics = trainer.step_fn(state, trainer.frozen, trainer.reference, mb, short)
        jax.block_until_ready((state.trainable, metrics))
        times.append(time.perf_counter() - t)
    loss = float(metrics["actor/loss"])
    if not np.isfinite(loss):
        raise FloatingPointError(f"the step's loss is {loss}")
    return {"compile_and_first_s": times[0], "step_s": times[1:], "loss": loss,
            "logprob_impl": trainer.step_settings.logprob_impl or "auto", "dtype": trainer.step_settings.dtype}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("lora", "full"), required=True)
    parser.add_argument("--smoke", action="store_true", help="a tiny model and batch (any backend)")
    parser.add_argument("--logprob-impl", default="auto", help="ModelSpec.logprob_impl (auto: the product default)")
    parser.add_argument("--fallback-impl", default=None,
                        help="if the step fails to build or run with --logprob-impl, say so and time it with this one")
    parser.add_argument("--json", default=None, help="write the rows and raw figures here")
    args = parser.parse_args(argv)
    m, s = (SMOKE_MODEL, SMOKE) if args.smoke else (QWEN25_05B, FULL)
    lora = LoraConfig(rank=16, alpha=32.0) if args.mode == "lora" else None
    flops = train_step_flops(m, s, lora)
    print(f"{args.mode}: {m.num_params / 1e6:.1f}M params, B={s.B} G={s.G} P={s.P} C={s.C}, "
          f"{flops['total'] / 1e12:.3g} TFLOP per step ({', '.join(f'{k} {v / 1e12:.3g}' for k, v in flops.items())})",
          flush=True)
    impl, note, run = args.logprob_impl, "", None
    try:
        run = time_steps(args.mode, m, s, impl)
    except Exception as err:  # noqa: BLE001 - loud: the table says the default failed and which kernel was timed
        if args.fallback_impl is None:
            raise
        note = f" ({impl} failed: {type(err).__name__}: {(str(err).splitlines() or [''])[0][:120]})"
        print(f"the step with logprob_impl={impl} failed{note}; timing it with {args.fallback_impl}", flush=True)
    if run is None:  # out of the except block, so the failed attempt's buffers are freed first
        impl = args.fallback_impl
        run = time_steps(args.mode, m, s, impl)
    step_s = statistics.median(run["step_s"])
    peak_bytes = (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
    est = estimate_memory(m, RunShape(s.B, s.G, s.P, s.C, full_finetune=lora is None, reference_copy=lora is None),
                          compute_dtype=run["dtype"], backend=jax.default_backend())
    ceil = ceilings(args.smoke)
    achieved = flops["total"] / step_s
    mfu_measured = achieved / ceil["matmul_flops"]
    mfu_spec = None if ceil["spec_flops"] is None else achieved / ceil["spec_flops"]
    # The goal is MFU against the datasheet peak; where there is none (a CPU) it is judged on the measured one.
    on_spec = mfu_spec is not None
    rows = [row(f"{args.mode} step ({run['dtype']}, log-prob kernel {run['logprob_impl']}{note})",
                f"{step_s * 1e3:.1f} ms (median of {s.steps}; first call {run['compile_and_first_s']:.1f} s)"),
            row("model TFLOP per step / achieved TFLOP/s", f"{flops['total'] / 1e12:.3g} / {achieved / 1e12:.3g}"),
            row("MFU vs datasheet peak", f"{mfu_spec:.1%}" if on_spec else "n/a (no datasheet for this device)",
                ">= 40%" if on_spec else "", mfu_spec >= 0.40 if on_spec else None),
            row("MFU vs measured matmul ceiling", f"{mfu_measured:.1%} of {ceil['matmul_flops'] / 1e12:.3g} TFLOP/s",
                "" if on_spec else ">= 40%", None if on_spec else mfu_measured >= 0.40),
            row("device peak memory (allocator) / estimate",
                ("n/a" if peak_bytes is None else f"{peak_bytes / 2**30:.3g} GiB") + f" / {est.total / 2**30:.3g} GiB")]
    print_rows(rows)
    write_part(args.json, rows, {"mode": args.mode, "model": dataclasses.asdict(m), "shape": dataclasses.asdict(s),
                                 "flops": flops, **run, "step_median_s": step_s, "achieved_flops": achieved,
                                 "mfu_spec": mfu_spec, "mfu_measured": mfu_measured, "ceilings": ceil,
                                 "peak_bytes_in_use": peak_bytes, "estimate_bytes": est.total,
                                 "requested_logprob_impl": args.logprob_impl, "timed_logprob_impl": impl})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
