"""Plain-jnp oracle for the fused GRPO loss, on flat token arrays [N].

Built from the same pure functions as `rft_jax.grpo.grpo_loss`; its gradient is
JAX autodiff. Every other backend is tested against this.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rft_jax.grpo.loss import GRPOLossConfig, token_terms


def grpo_token_loss(logp_N, old_logp_N, adv_N, weight_N, valid_N, ref_logp_N, cfg: GRPOLossConfig, block=None):
    """(loss, sums) with loss = Σ w·(pg + β·kl); sums as in fused_math.SUM_NAMES."""
    del block
    f32 = lambda x: x.astype(jnp.float32)  # noqa: E731
    logp_N, old_logp_N, weight_N = f32(logp_N), f32(old_logp_N), f32(weight_N)
    valid_N = valid_N != 0
    ref = None if ref_logp_N is None else f32(ref_logp_N)
    pg_N, clipped_N, kl_N = token_terms(logp_N, old_logp_N, f32(adv_N), valid_N, cfg, ref)
    pg = jnp.sum(weight_N * pg_N)
    kl = jnp.zeros((), jnp.float32) if kl_N is None else jnp.sum(weight_N * kl_N)
    loss = pg + cfg.beta * kl
    sums = {
        "loss": loss,
        "pg": pg,
        "kl": kl,
        "clipped": jnp.sum(jnp.where(valid_N, clipped_N, False).astype(jnp.float32)),
        "ppo_kl": jnp.sum(jnp.where(valid_N, old_logp_N - logp_N, 0.0)),
    }
    return loss, jax.lax.stop_gradient(sums)
