"""One GRPO update: the loss of a rollout batch, its gradient, and the optimizer step.

The trainable pytree is the LoRA adapters (base frozen and passed separately)
or the full parameters. Everything here is jitted once per prompt-length bucket.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from rft_jax.grpo import GRPOLossConfig, TrainState, accumulate_gradients, grpo_loss, loss_weights, split_microbatches
from rft_jax.grpo.mismatch import mismatch_metrics
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
    logprob_impl: str | None = None  # a kernels.fused_logprob implementation (ModelSpec.logprob_impl, resolved)
    mesh: Mesh | None = None  # the training mesh: a Pallas log-prob kernel runs split over it
    max_new_tokens: int | None = None  # generation budget: Dr.GRPO's L_norm when loss.norm_length is None


def _split(trainable, frozen, lora_mode: bool):
    return (frozen, trainable) if lora_mode else (trainable, None)


def loss_config(s: StepSettings) -> GRPOLossConfig:
    """The loss settings the step runs: Dr.GRPO's L_norm must be a constant, never the batch's padded width (a
    token's weight would then depend on the other groups' lengths), so it defaults to the generation budget."""
    if s.loss.aggregation != "seq-mean-token-sum-norm" or s.loss.norm_length is not None:
        return s.loss
    if s.max_new_tokens is None:
        raise ValueError("aggregation='seq-mean-token-sum-norm' needs a constant L_norm: set loss.norm_length, or "
                         "StepSettings.max_new_tokens (the generation budget, which the trainer passes)")
    return dataclasses.replace(s.loss, norm_length=s.max_new_tokens)


def router_loss_on(model: ModelConfig) -> bool:
    """Whether the step adds the load-balancing loss: a mixture of experts whose config weighs it (the HF
    config's `router_aux_loss_coef` when it sets `output_router_logits`, as transformers trains)."""
    return model.num_experts > 0 and model.router_aux_loss_coef > 0


def _loss_mask(batch: RolloutBatch) -> jax.Array:
    return batch.completion_mask_BxGxC if batch.loss_mask_BxGxC is None else batch.loss_mask_BxGxC


def batch_loss_weights(batch: RolloutBatch, s: StepSettings) -> jax.Array:
    """[B, G, C] aggregation weights of the whole batch (token counts over every micro-batch, as verl and TRL)."""
    b, g, c = batch.completion_BxGxC.shape
    _, weight = loss_weights(_loss_mask(batch).reshape(b * g, c), loss_config(s), batch.truncated_BxG.reshape(b * g))
    return weight.reshape(b, g, c)


def batch_loss(trainable: dict, frozen: dict | None, reference: dict | None, batch: RolloutBatch,
               s: StepSettings, short_completion: int | None = None,
               weight_BxGxC: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """GRPO loss of a (micro-)batch and its metrics. `short_completion`: the first half of each group's
    rows ends within that many tokens (see `rft_jax.rollout.batch.short_completion_len`). `weight_BxGxC`:
    this micro-batch's aggregation weights (default: computed from this batch alone)."""
    loss_cfg = loss_config(s)
    lora_mode = s.lora_scale is not None
    params, lora = _split(trainable, frozen, lora_mode)
    dtype = jnp.dtype(s.dtype)
    kw = dict(lora_scale=s.lora_scale or 1.0, temperature=s.temperature, dtype=dtype, remat=s.remat,
              implementation=s.logprob_impl, short_completion=short_completion, mesh=s.mesh)
    logp, entropy, *router_loss = completion_logprobs(params, s.model, batch.prompt_BxP, batch.prompt_mask_BxP,
                                                      batch.completion_BxGxC, lora=lora,
                                                      completion_mask_BxGxC=batch.completion_mask_BxGxC,
                                                      router_loss=router_loss_on(s.model), **kw)
    ref_logp = None
    if s.loss.beta != 0.0:
        ref_params = frozen if lora_mode else reference
        ref_logp, _ = completion_logprobs(ref_params, s.model, batch.prompt_BxP, batch.prompt_mask_BxP,
                                          batch.completion_BxGxC, lora=None,
                                          completion_mask_BxGxC=batch.completion_mask_BxGxC, **kw)
        ref_logp = jax.lax.stop_gradient(ref_logp)
    # old: the proximal policy (this step's parameters before its first update); behaviour: the sampler's. With
    # one update the old_logp field holds the sampler's; with several, the trainer's recomputed proximal ones.
    old = batch.old_logp_BxGxC if s.use_old_logp else jax.lax.stop_gradient(logp)
    behaviour = batch.old_logp_BxGxC
    if s.use_old_logp and batch.behaviour_logp_BxGxC is not None:
        behaviour = batch.behaviour_logp_BxGxC
    b, g, c = logp.shape
    flat = lambda x: None if x is None else x.reshape(b * g, c)  # noqa: E731
    loss, metrics = grpo_loss(flat(logp), flat(old), batch.advantages_BxG.reshape(b * g), flat(_loss_mask(batch)),
                              loss_cfg, ref_logp_BxC=flat(ref_logp),
                              entropy_BxC=flat(jax.lax.stop_gradient(entropy)) if s.loss.entropy_coef == 0 else flat(entropy),
                              truncated_B=batch.truncated_BxG.reshape(b * g), weight_BxC=flat(weight_BxGxC),
                              behaviour_logp_BxC=flat(behaviour))  # coupled: the ratio against it (loss.py)
    if not s.use_old_logp:  # one update: old_logp holds the sampler's own log-probs of these tokens
        metrics.update(mismatch_metrics(jax.lax.stop_gradient(logp), batch.old_logp_BxGxC, _loss_mask(batch)))
    if router_loss:  # a mixture of experts' load-balancing loss, over this (micro-)batch's routed tokens
        loss = loss + s.model.router_aux_loss_coef * router_loss[0]
        metrics["actor/router_aux_loss"] = router_loss[0]
    return loss, {"actor/loss": loss, **metrics}


def batch_gradients(trainable: dict, frozen: dict | None, reference: dict | None, batch: RolloutBatch,
                    s: StepSettings, short_completion: int | None = None) -> tuple[dict, dict]:
    """(gradient, metrics) of the whole batch's loss, accumulated over `s.microbatches` micro-batches of whole groups.

    The aggregation weights are computed once over the whole batch, so the accumulated gradient is the
    full batch's (token-mean divides by the batch's token count, not each micro-batch's). Each micro-batch
    gets M times its share because `accumulate_gradients` averages the M micro-batch gradients.
    """

    def grad_fn(trainable, mb_and_weight):
        mb, weight = mb_and_weight
        (_, metrics), grads = jax.value_and_grad(batch_loss, has_aux=True)(trainable, frozen, reference, mb, s,
                                                                          short_completion, weight)
        return grads, metrics

    weight_BxGxC = batch_loss_weights(batch, s)
    if s.microbatches == 1:
        return grad_fn(trainable, (batch, weight_BxGxC))
    return accumulate_gradients(grad_fn, trainable,
                                split_microbatches((batch, weight_BxGxC * s.microbatches), s.microbatches))


def train_step(state: TrainState, frozen: dict | None, reference: dict | None, batch: RolloutBatch,
               optimizer: optax.GradientTransformation, s: StepSettings,
               short_completion: int | None = None) -> tuple[TrainState, dict]:
    """`batch_gradients` and one optimizer update."""
    grads, metrics = batch_gradients(state.trainable, frozen, reference, batch, s, short_completion)
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
