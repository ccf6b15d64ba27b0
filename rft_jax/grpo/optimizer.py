"""AdamW with warmup and a constant or cosine schedule, gradient clipping, and
gradient accumulation over micro-batches.

Accumulation design: we do NOT use `optax.MultiSteps`. The trainer computes the
whole step's gradient in one jitted call with `accumulate_gradients` (a
`lax.scan` over micro-batches that sums gradients in float32), then applies one
optimizer update. So one optimizer step == one schedule step == one log line,
the optimizer state holds no hidden accumulation buffer, and peak memory is one
micro-batch's activations plus one gradient accumulator.

The step's gradient is the *mean of the micro-batch gradients*; so that it is
exactly the whole batch's gradient (token-mean over every micro-batch's tokens,
as verl and TRL normalise), `rft_jax.train.step.train_step` computes the loss
weights over the whole batch and hands each micro-batch M times its share.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax


class TrainState(NamedTuple):
    """What an optimizer run carries from step to step (GRPO and SFT alike)."""

    trainable: dict  # LoRA adapters, or all parameters for full fine-tuning
    opt_state: optax.OptState
    step: jax.Array


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Optimizer settings (AdamW, Loshchilov & Hutter)."""

    learning_rate: float = 1e-6
    """η: peak learning rate, reached at the end of warmup."""
    warmup_steps: int = 0
    """Optimizer steps of linear warmup; step s uses η·(s+1)/warmup_steps, so step 0 is not wasted."""
    schedule: Literal["constant", "cosine"] = "constant"
    """Learning-rate shape after warmup."""
    min_lr_ratio: float = 0.0
    """Cosine only: final learning rate as a fraction of η."""
    weight_decay: float = 0.01
    """λ: decoupled weight decay, applied to matrices only (not norms or biases)."""
    b1: float = 0.9
    """β₁ of Adam."""
    b2: float = 0.999
    """β₂ of Adam."""
    eps: float = 1e-8
    """ε of Adam."""
    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm to this; None = no clipping."""
    grad_accum_steps: int = 1
    """Micro-batches per optimizer step (see `accumulate_gradients`)."""


def _warmup_factor(step, cfg: OptimizerConfig):
    return jnp.minimum(1.0, (step + 1.0) / max(cfg.warmup_steps, 1))


def constant(step, cfg: OptimizerConfig, total_steps: int):
    del total_steps
    return cfg.learning_rate * _warmup_factor(step, cfg)


def cosine(step, cfg: OptimizerConfig, total_steps: int):
    decay_steps = max(total_steps - cfg.warmup_steps, 1)
    progress = jnp.clip((step - cfg.warmup_steps) / decay_steps, 0.0, 1.0)
    shape = cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + jnp.cos(math.pi * progress))
    return cfg.learning_rate * _warmup_factor(step, cfg) * shape


SCHEDULES: dict[str, Callable[[Any, OptimizerConfig, int], Any]] = {"constant": constant, "cosine": cosine}


def make_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Learning rate at optimizer step `step` (0-based); the trainer logs it."""
    fn = SCHEDULES[cfg.schedule]
    return lambda step: fn(jnp.asarray(step, jnp.float32), cfg, total_steps)


def _decay_mask(params):
    """Weight decay by parameter name, not by rank (layers are stacked, so a norm is [L, D]).

    Common practice (GPT-2/nanoGPT, Hugging Face's Trainer): decay the matrices
    (projection weights "w", embeddings, LoRA's A and B); never decay norms
    ("*norm") or biases (a "b" beside a projection's "w"; LoRA's "b" sits beside an "a").
    """
    def walk(node, name: str = "", siblings=()):
        if isinstance(node, dict):
            return {k: walk(v, k, node) for k, v in node.items()}
        return not (name.endswith("norm") or (name == "b" and "w" in siblings))

    return walk(params)


def make_optimizer(cfg: OptimizerConfig, total_steps: int, updates_per_step: int = 1) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW on `make_schedule`.

    `total_steps` and the schedule count *steps* of the run (RL steps). With
    several optimizer updates per step (μ PPO passes x mini-batches), optax's
    update count is divided by `updates_per_step`, so every update of step k
    uses schedule(k) and the schedule ends with the run, not μ times too early.
    """
    schedule = make_schedule(cfg, total_steps)
    adamw = optax.adamw(
        lambda count: schedule(count // updates_per_step), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
        weight_decay=cfg.weight_decay, mask=_decay_mask,
    )
    if cfg.max_grad_norm is None:
        return adamw
    return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), adamw)


def split_microbatches(batch, n: int):
    """Reshape every leaf [B, ...] -> [n, B/n, ...] for `accumulate_gradients`."""
    def split(x):
        if x.shape[0] % n:
            raise ValueError(f"batch size {x.shape[0]} is not divisible by {n} micro-batches")
        return x.reshape(n, x.shape[0] // n, *x.shape[1:])
    return jax.tree.map(split, batch)


def accumulate_gradients(grad_fn, params, microbatches):
    """Mean gradient and mean metrics over micro-batches, with one `lax.scan`.

    `grad_fn(params, microbatch) -> (grads, metrics)`; `microbatches` is a pytree
    whose leaves have a leading micro-batch axis M (see `split_microbatches`).
    Gradients are summed in float32 and returned in the dtypes `grad_fn` returns.
    """
    n = jax.tree.leaves(microbatches)[0].shape[0]
    grads0, metrics0 = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], microbatches))
    zeros = lambda tree: jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), tree)  # noqa: E731

    def body(carry, microbatch):
        grads, metrics = grad_fn(params, microbatch)
        add = lambda acc, x: acc + x.astype(jnp.float32)  # noqa: E731
        combined = {k: jnp.maximum(carry[1][k], v) if is_max_metric(k) else add(carry[1][k], v)
                    for k, v in metrics.items()}
        return (jax.tree.map(add, carry[0], grads), combined), None

    start = {k: jnp.full(s.shape, -jnp.inf) if is_max_metric(k) else jnp.zeros(s.shape, jnp.float32)
             for k, s in metrics0.items()}
    (grad_sum, metric_sum), _ = jax.lax.scan(body, (zeros(grads0), start), microbatches)
    grads = jax.tree.map(lambda s, like: (s / n).astype(like.dtype), grad_sum, grads0)
    return grads, {k: v if is_max_metric(k) else v / n for k, v in metric_sum.items()}


def is_max_metric(name: str) -> bool:
    """A metric that is a maximum (`off_policy/is_ratio_max`, `mismatch/max_abs_logp_diff`): combined over
    micro-batches by max, the others by mean."""
    return "max" in name.rsplit("/", 1)[-1]
