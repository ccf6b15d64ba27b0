"""Supervised fine-tuning step: negative log-likelihood of target completion tokens.

It reuses the GRPO policy forward (prompt once, completion as a branch), with
G = 1, so SFT and RFT train exactly the same parameters the same way.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from rft_jax.grpo import TrainState
from rft_jax.model.config import ModelConfig
from rft_jax.model.logprobs import completion_logprobs


@dataclasses.dataclass(frozen=True)
class SFTSettings:
    model: ModelConfig
    lora_scale: float | None  # None: full fine-tuning
    dtype: str = "float32"
    remat: bool = False
    logprob_impl: str | None = None  # a kernels.fused_logprob implementation; None: the backend's best
    mesh: Mesh | None = None  # where the parameters live: a Pallas log-prob kernel runs split over it


def sft_loss(trainable, frozen, prompt_BxP, prompt_mask_BxP, target_BxC, target_mask_BxC, s: SFTSettings):
    """Token-mean NLL over the target tokens (the assistant turn, its end-of-turn token included)."""
    params, lora = (frozen, trainable) if s.lora_scale is not None else (trainable, None)
    logp, _ = completion_logprobs(params, s.model, prompt_BxP, prompt_mask_BxP, target_BxC[:, None], lora=lora,
                                  lora_scale=s.lora_scale or 1.0, dtype=jnp.dtype(s.dtype), remat=s.remat,
                                  implementation=s.logprob_impl, mesh=s.mesh)
    mask = target_mask_BxC.astype(jnp.float32)
    return -jnp.sum(logp[:, 0] * mask) / jnp.maximum(mask.sum(), 1.0)


def jit_sft_step(optimizer: optax.GradientTransformation, s: SFTSettings):
    def step(state: TrainState, frozen, prompt, pmask, target, tmask):
        loss, grads = jax.value_and_grad(sft_loss)(state.trainable, frozen, prompt, pmask, target, tmask, s)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.trainable)
        return TrainState(optax.apply_updates(state.trainable, updates), opt_state, state.step + 1), loss

    return jax.jit(step, donate_argnums=(0,))
