"""One GRPO update: the loss of a rollout batch, its gradient, and the optimizer step.

The trainable pytree is the LoRA adapters (base frozen and passed separately)
or the full parameters. Everything here is jitted once per prompt-length bucket.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from rft_jax.grpo import GRPOLossConfig, TrainState, accumulate_gradients, grpo_loss, split_microbatches
from rft_jax.model.config import ModelConfig
from rft_jax.model.logprobs import completion_logprobs
from rft_jax.rollout.batch import RolloutBatch


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """Static settings of the jitted step (hashable)."""

    model: ModelConfig
    loss: GRPOLossConfig
    lora_scale: float | None  # None: full fine-tuning
    temperature: float
    dtype: str = "bfloat16"
    microbatches: int = 1
    remat: bool = False  # recompute each layer in the backward pass (memory for time)
    use_old_logp: bool = False  # mu > 1: ratio against the rollout's log-probs
    logprob_impl: str | None = None


def _split(trainable, frozen, lora_mode: bool):
    return (frozen, trainable) if lora_mode else (trainable, None)


def batch_loss(trainable: dict, frozen: dict | None, reference: dict | None, batch: RolloutBatch,
               s: StepSettings, short_completion: int | None = None) -> tuple[jax.Array, dict]:
    """GRPO loss of a (micro-)batch and its metrics. `short_completion`: the first half of each group's
    rows ends within that many tokens (see `rft_jax.rollout.batch.short_completion_len`)."""
    lora_mode = s.lora_scale is not None
    params, lora = _split(trainable, frozen, lora_mode)
    dtype = jnp.dtype(s.dtype)
    kw = dict(lora_scale=s.lora_scale or 1.0, temperature=s.temperature, dtype=dtype, remat=s.remat,
              implementation=s.logprob_impl, short_completion=short_completion)
    logp, entropy = completion_logprobs(params, s.model, batch.prompt_BxP, batch.prompt_mask_BxP,
                                        batch.completion_BxGxC, lora=lora,
                                        completion_mask_BxGxC=batch.completion_mask_BxGxC, **kw)
    ref_logp = None
    if s.loss.beta != 0.0:
        ref_params = frozen if lora_mode else reference
        ref_logp, _ = completion_logprobs(ref_params, s.model, batch.prompt_BxP, batch.prompt_mask_BxP,
                                          batch.completion_BxGxC, lora=None,
                                          completion_mask_BxGxC=batch.completion_mask_BxGxC, **kw)
        ref_logp = jax.lax.stop_gradient(ref_logp)
    old = batch.old_logp_BxGxC if s.use_old_logp else jax.lax.stop_gradient(logp)
    b, g, c = logp.shape
    flat = lambda x: None if x is None else x.reshape(b * g, c)  # noqa: E731
    loss_mask = batch.completion_mask_BxGxC if batch.loss_mask_BxGxC is None else batch.loss_mask_BxGxC
    loss, metrics = grpo_loss(flat(logp), flat(old), batch.advantages_BxG.reshape(b * g), flat(loss_mask), s.loss, ref_logp_BxC=flat(ref_logp),
                              entropy_BxC=flat(jax.lax.stop_gradient(entropy)) if s.loss.entropy_coef == 0 else flat(entropy),
                              truncated_B=batch.truncated_BxG.reshape(b * g))
    return loss, {"actor/loss": loss, **metrics}


def train_step(state: TrainState, frozen: dict | None, reference: dict | None, batch: RolloutBatch,
               optimizer: optax.GradientTransformation, s: StepSettings,
               short_completion: int | None = None) -> tuple[TrainState, dict]:
    """Gradient (accumulated over micro-batches of whole groups) and one optimizer update."""

    def grad_fn(trainable, mb):
        (_, metrics), grads = jax.value_and_grad(batch_loss, has_aux=True)(trainable, frozen, reference, mb, s,
                                                                          short_completion)
        return grads, metrics

    if s.microbatches > 1:
        grads, metrics = accumulate_gradients(grad_fn, state.trainable, split_microbatches(batch, s.microbatches))
    else:
        grads, metrics = grad_fn(state.trainable, batch)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.trainable)
    trainable = optax.apply_updates(state.trainable, updates)
    metrics = {**metrics, "actor/grad_norm": optax.tree.norm(grads)}
    return TrainState(trainable, opt_state, state.step + 1), metrics


def jit_train_step(optimizer: optax.GradientTransformation, s: StepSettings):
    """`train_step` jitted with the state donated (its buffers are reused for the new state); call it as
    `step(state, frozen, reference, batch, short_completion_len(batch))`."""
    def step(state, frozen, reference, batch, short_completion=None):
        return train_step(state, frozen, reference, batch, optimizer, s, short_completion)

    return jax.jit(step, donate_argnums=(0,), static_argnums=(4,))
