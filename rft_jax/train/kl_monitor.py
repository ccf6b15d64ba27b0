"""KL from the reference policy, measured every N steps even when β = 0.

With β = 0 the loss has no KL term and `actor/kl_loss` is never computed, yet
how far the policy has drifted from where it started is the first thing to
watch. This hook takes a few groups of the step's own rollouts and measures
the k3 estimate of KL(π_θ || π_ref) on their policy tokens: one extra forward
of the reference on that subset (with LoRA, the same weights with the adapters
off). It is logged as `actor/ref_kl` (names.REF_KL), plotted in the report's KL
panel, and read by the KL alarm.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rft_jax.grpo.kl import KL_ESTIMATORS
from rft_jax.model.logprobs import completion_logprobs
from rft_jax.monitoring import names
from rft_jax.rollout.batch import RolloutBatch, pack_groups
from rft_jax.train.hooks import Hook, StepContext


@functools.partial(jax.jit, static_argnames=("s",))
def reference_kl(policy: dict, lora: dict | None, reference: dict, batch: RolloutBatch, s) -> jax.Array:
    """Mean k3 KL(π_θ || π_ref) per policy token of `batch`."""
    kw = dict(temperature=s.temperature, dtype=jnp.dtype(s.dtype), remat=False, implementation=s.logprob_impl,
              mesh=s.mesh, completion_mask_BxGxC=batch.completion_mask_BxGxC)
    args = (s.model, batch.prompt_BxP, batch.prompt_mask_BxP, batch.completion_BxGxC)
    logp, _ = completion_logprobs(policy, *args, lora=lora, lora_scale=s.lora_scale or 1.0, **kw)
    ref_logp, _ = completion_logprobs(reference, *args, lora=None, **kw)
    mask = batch.completion_mask_BxGxC if batch.loss_mask_BxGxC is None else batch.loss_mask_BxGxC
    kl = KL_ESTIMATORS["k3"](jnp.where(mask, ref_logp - logp, 0.0))
    return jnp.sum(jnp.where(mask, kl, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def kl_monitor_hook(trainer, every: int, groups: int = 2) -> Hook:
    """Every `every` steps: KL to the reference on the first `groups` groups of the step's rollouts.

    The reference is the trainer's: with LoRA the frozen base, in full fine-tuning its reference copy.
    """
    settings = trainer.step_settings
    lora_mode = settings.lora_scale is not None

    def measure(ctx: StepContext) -> None:
        subset = ctx.rollouts.groups[:groups]
        batch = pack_groups(subset, np.zeros((len(subset), len(subset[0])), np.float32),
                            pad_id=trainer.tokenizer.pad_id, max_completion_tokens=trainer.cfg.sampling.max_new_tokens)
        if lora_mode:
            value = reference_kl(trainer.frozen, ctx.state.trainable, trainer.frozen, batch, settings)
        else:
            value = reference_kl(ctx.state.trainable, None, trainer.reference, batch, settings)
        ctx.metrics[names.REF_KL] = float(value)

    return Hook("kl_monitor", measure, every=every)
