"""Plain-jnp oracle for the fused GRPO loss, on flat token arrays [N].

Written from the objective (rft_jax/grpo/loss.py docstring), independently of
rft_jax, which the tests compare it with. For token t, with r = exp(logp - old_logp):

    pg_t = max(-A·r, -A·clip(r, 1 - ε_low, 1 + ε_high))
    kl_t = k(ref_logp - logp),  k1 = -x,  k2 = x²/2,  k3 = eˣ - x - 1
    loss = Σ_t w_t·(pg_t + β·kl_t)

w_t is the aggregation weight (zero on masked tokens). Masked tokens get a
log-ratio of 0, so any padding value (even -inf) stays finite. The gradient is
JAX autodiff; every other backend is tested against this.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

KL_ESTIMATORS = {
    "k1": lambda x: -x,
    "k2": lambda x: 0.5 * jnp.square(x),
    "k3": lambda x: jnp.exp(x) - x - 1.0,
}


def _seq_mean_token_mean(m_BxC, norm_len):
    del norm_len
    len_Bx1 = jnp.sum(m_BxC, axis=1, keepdims=True)
    return m_BxC / jnp.maximum(len_Bx1, 1.0) / jnp.maximum(jnp.sum(len_Bx1 > 0), 1)  # empty rows do not count


# Aggregation as per-token weights of a float mask [B, C]: token mean, GRPO's per-sequence mean, Dr.GRPO's L_norm.
AGGREGATIONS = {
    "token-mean": lambda m_BxC, norm_len: m_BxC / jnp.maximum(jnp.sum(m_BxC), 1.0),
    "seq-mean-token-mean": _seq_mean_token_mean,
    "seq-mean-token-sum-norm": lambda m_BxC, norm_len: m_BxC / (norm_len * m_BxC.shape[0]),
}


def token_terms(logp, old_logp, adv, valid, params, ref_logp=None):
    """Per-token (pg, clipped, kl-or-None) for any shape; `valid` is the bool token mask.

    `clipped` marks tokens where the clipped branch is strictly larger (the clip zeroes the gradient).
    """
    ratio = jnp.exp(jnp.where(valid, logp - old_logp, 0.0))
    unclipped = -adv * ratio
    clipped = -adv * jnp.clip(ratio, 1.0 - params.epsilon_low, 1.0 + params.epsilon_high)
    pg = jnp.maximum(unclipped, clipped)
    kl = None if ref_logp is None else KL_ESTIMATORS[params.kl_estimator](jnp.where(valid, ref_logp - logp, 0.0))
    return pg, clipped > unclipped, kl


def loss_weights(mask_BxC, params, truncated_B=None):
    """(valid_BxC bool, weight_BxC f32): the token mask after dropping truncated rows, and the weights."""
    valid_BxC = mask_BxC.astype(bool)
    if params.mask_truncated:
        if truncated_B is None:
            raise ValueError("mask_truncated=True needs truncated_B")
        valid_BxC = valid_BxC & ~truncated_B.astype(bool)[:, None]
    norm_len = params.norm_length or mask_BxC.shape[1]
    return valid_BxC, AGGREGATIONS[params.aggregation](valid_BxC.astype(jnp.float32), norm_len)


def check_inputs(params, ref_logp_BxC, entropy_BxC) -> None:
    """Fail early on settings that need an input that was not given."""
    if params.beta != 0.0 and ref_logp_BxC is None:
        raise ValueError(f"beta={params.beta} needs ref_logp_BxC")
    if params.entropy_coef != 0.0 and entropy_BxC is None:
        raise ValueError(f"entropy_coef={params.entropy_coef} needs entropy_BxC")


def grpo_token_loss(logp_N, old_logp_N, adv_N, weight_N, valid_N, ref_logp_N, params, block=None):
    """(loss, sums) with loss = Σ w·(pg + β·kl); sums as in fused_math.SUM_NAMES."""
    del block
    f32 = lambda x: x.astype(jnp.float32)  # noqa: E731
    logp_N, old_logp_N, weight_N = f32(logp_N), f32(old_logp_N), f32(weight_N)
    valid_N = valid_N != 0
    ref = None if ref_logp_N is None else f32(ref_logp_N)
    pg_N, clipped_N, kl_N = token_terms(logp_N, old_logp_N, f32(adv_N), valid_N, params, ref)
    pg = jnp.sum(weight_N * pg_N)
    kl = jnp.zeros((), jnp.float32) if kl_N is None else jnp.sum(weight_N * kl_N)
    loss = pg + params.beta * kl
    sums = {
        "loss": loss,
        "pg": pg,
        "kl": kl,
        "clipped": jnp.sum(jnp.where(valid_N, clipped_N, False).astype(jnp.float32)),
        "ppo_kl": jnp.sum(jnp.where(valid_N, old_logp_N - logp_N, 0.0)),
    }
    return loss, jax.lax.stop_gradient(sums)
