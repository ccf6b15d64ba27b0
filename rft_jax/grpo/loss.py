"""The GRPO objective: clipped policy-gradient surrogate + β·KL - entropy bonus.

For completion token t of sequence b, with r = π_θ / π_old = exp(logp - old_logp)
and advantage A_b (one per sequence, from `advantages.py`):

    pg_t  = max(-A·r, -A·clip(r, 1 - ε_low, 1 + ε_high))      # PPO clip, DAPO clip-higher
    kl_t  = k(log π_ref - log π_θ)                             # `kl.py`, only when β > 0
    loss  = Σ_t w_t·(pg_t + β·kl_t) - c_H·Σ_t w_t·H_t          # w from `aggregation.py`

Masked tokens get weight 0 and a log-ratio of 0, so padding with any value
(even -inf) can never produce NaN. With several optimisation passes per batch
(μ > 1) the trainer passes the rollout's log-probs as `old_logp`; on the first
pass r = 1 and clipping is inactive.

Metrics are named as verl names them so dashboards carry over.
kernels/grpo_loss computes the same thing in one fused pass.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax.numpy as jnp

from rft_jax.grpo.aggregation import AGGREGATIONS, masked_mean
from rft_jax.grpo.kl import KL_ESTIMATORS


@dataclasses.dataclass(frozen=True)
class GRPOLossConfig:
    """GRPO algorithm settings. Defaults follow DAPO (arXiv 2503.14476) without KL."""

    epsilon_low: float = 0.2
    """ε_low: the ratio is clipped below at 1 - ε_low."""
    epsilon_high: float = 0.28
    """ε_high: the ratio is clipped above at 1 + ε_high (DAPO clip-higher; = ε_low for PPO)."""
    beta: float = 0.0
    """β: weight of the KL penalty to the reference policy. 0 needs no reference model."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    """Per-token KL estimator (see kl.py); k3 is GRPO's."""
    aggregation: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = "token-mean"
    """How token losses are averaged (see aggregation.py)."""
    norm_length: int | None = None
    """L_norm, the constant length of `seq-mean-token-sum-norm` (Dr.GRPO); None = padded C."""
    entropy_coef: float = 0.0
    """c_H: weight of the entropy bonus (subtracted from the loss). Needs `entropy_BxC`."""
    mask_truncated: bool = False
    """Drop completions that hit the length budget from the loss (DAPO overlong filtering)."""

    def __post_init__(self):
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator {self.kl_estimator!r} not in {sorted(KL_ESTIMATORS)}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation {self.aggregation!r} not in {sorted(AGGREGATIONS)}")
        if not (0.0 <= self.epsilon_low < 1.0 and self.epsilon_high >= 0.0):
            raise ValueError(f"need 0 <= ε_low < 1 and ε_high >= 0, got {self.epsilon_low}, {self.epsilon_high}")


def clipped_surrogate(log_ratio, advantages, epsilon_low: float, epsilon_high: float):
    """PPO's clipped surrogate as a loss, elementwise. Returns (loss, clipped).

    `clipped` marks tokens where the clipped branch is strictly larger, i.e. where
    the clip zeroes the gradient (verl's `pg_clipfrac` counts these).
    """
    ratio = jnp.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * jnp.clip(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high)
    return jnp.maximum(unclipped, clipped), clipped > unclipped


def token_terms(logp, old_logp, advantages, valid, cfg: GRPOLossConfig, ref_logp=None):
    """Per-token (pg, clipped, kl-or-None) for any shape; `valid` is the bool token mask.

    kernels/grpo_loss keeps its own copy (kernels import nothing from rft_jax); its tests compare the two.
    """
    log_ratio = jnp.where(valid, logp - old_logp, 0.0)
    pg, clipped = clipped_surrogate(log_ratio, advantages, cfg.epsilon_low, cfg.epsilon_high)
    if ref_logp is None:
        return pg, clipped, None
    kl = KL_ESTIMATORS[cfg.kl_estimator](jnp.where(valid, ref_logp - logp, 0.0))
    return pg, clipped, kl


def loss_weights(mask_BxC, cfg: GRPOLossConfig, truncated_B=None):
    """(valid_BxC bool, weight_BxC f32): the token mask after truncation, and aggregation weights."""
    valid_BxC = mask_BxC.astype(bool)
    if cfg.mask_truncated:
        if truncated_B is None:
            raise ValueError("mask_truncated=True needs truncated_B")
        valid_BxC = valid_BxC & ~truncated_B.astype(bool)[:, None]
    norm_len = cfg.norm_length or mask_BxC.shape[1]
    return valid_BxC, AGGREGATIONS[cfg.aggregation](valid_BxC, norm_len)


def check_inputs(cfg: GRPOLossConfig, ref_logp_BxC, entropy_BxC) -> None:
    """Fail early on settings that need an input that was not given."""
    if cfg.beta != 0.0 and ref_logp_BxC is None:
        raise ValueError(f"beta={cfg.beta} needs ref_logp_BxC")
    if cfg.entropy_coef != 0.0 and entropy_BxC is None:
        raise ValueError(f"entropy_coef={cfg.entropy_coef} needs entropy_BxC")


def grpo_loss(
    logp_BxC,
    old_logp_BxC,
    advantages_B,
    mask_BxC,
    cfg: GRPOLossConfig,
    *,
    ref_logp_BxC=None,
    entropy_BxC=None,
    truncated_B=None,
):
    """Scalar GRPO loss and a metrics dict; differentiate w.r.t. `logp_BxC` (and entropy).

    `actor/kl_loss` is reported whenever `ref_logp_BxC` is given (even with β = 0),
    `actor/entropy` whenever `entropy_BxC` is given.
    """
    check_inputs(cfg, ref_logp_BxC, entropy_BxC)
    valid_BxC, weight_BxC = loss_weights(mask_BxC, cfg, truncated_B)
    f32 = lambda x: None if x is None else x.astype(jnp.float32)  # noqa: E731
    logp_BxC, old_logp_BxC = f32(logp_BxC), f32(old_logp_BxC)
    adv_Bx1 = f32(advantages_B)[:, None]

    pg_BxC, clipped_BxC, kl_BxC = token_terms(logp_BxC, old_logp_BxC, adv_Bx1, valid_BxC, cfg, f32(ref_logp_BxC))
    pg_loss = jnp.sum(weight_BxC * pg_BxC)
    loss = pg_loss
    metrics = {
        "actor/pg_loss": pg_loss,
        "actor/pg_clipfrac": masked_mean(clipped_BxC.astype(jnp.float32), valid_BxC),
        "actor/ppo_kl": masked_mean(jnp.where(valid_BxC, old_logp_BxC - logp_BxC, 0.0), valid_BxC),
    }
    if kl_BxC is not None:
        kl_loss = jnp.sum(weight_BxC * kl_BxC)
        loss = loss + cfg.beta * kl_loss
        metrics["actor/kl_loss"] = kl_loss
    if entropy_BxC is not None:
        entropy = jnp.sum(jnp.where(valid_BxC, weight_BxC * f32(entropy_BxC), 0.0))
        loss = loss - cfg.entropy_coef * entropy
        metrics["actor/entropy"] = entropy
    return loss, metrics
