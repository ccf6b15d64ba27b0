"""The GRPO objective: a policy-gradient surrogate + β·KL - entropy bonus.

For completion token t of sequence b, with r = π_θ / π_old = exp(logp - old_logp)
and advantage A_b (one per sequence, from `advantages.py`):

    pg_t  = max(-A·r, -A·clip(r, 1 - ε_low, 1 + ε_high))      # PPO clip, DAPO clip-higher
    kl_t  = k(log π_ref - log π_θ)                             # `kl.py`, only when β > 0
    loss  = Σ_t w_t·(pg_t + β·kl_t) - c_H·Σ_t w_t·H_t          # w from `aggregation.py`

`pg_t` is picked from the POLICY_LOSSES table by `GRPOLossConfig.policy_loss`
(sg = stop-gradient; each is a function of the log-ratio log r):

| name       | pg_t                                                  | from                               |
|------------|-------------------------------------------------------|------------------------------------|
| `ppo_clip` | max(-A·r, -A·clip(r, 1 - ε_low, 1 + ε_high))          | PPO; DAPO clip-higher              |
| `gspo`     | the same, with r replaced by s_t (below)              | GSPO, arXiv 2507.18071             |
| `cispo`    | -sg(clip(r, 1 - ε_low, 1 + ε_high))·A·log r           | CISPO, MiniMax-M1, arXiv 2506.13585 |
| `sapo`     | -A·(4/τ)·σ(τ·(r - 1)), τ = τ_pos if A > 0 else τ_neg | SAPO, arXiv 2511.20347             |

- Dual-clip (ppo_clip, `clip_ratio_c` = c): for A < 0, pg_t = min(pg_t, -A·c),
  so one huge ratio cannot dominate the batch (Ye et al., arXiv 1912.09729; verl).
- GSPO-token: s = exp(mean of log r over the sequence's tokens) and
  s_t = sg(s)·exp(log r_t - sg(log r_t)), which has the value of s at every token
  and the gradient s·∇log π_θ(y_t); with `seq-mean-token-mean` that is exactly the
  gradient of the sequence-level objective. The mean runs over the last axis, so
  GSPO needs [B, C] inputs (one row per sequence); log s is capped at 10 as in verl.
- CISPO: the paper writes log π_θ where we write log r = log π_θ - log π_old. The
  gradient is the same (log π_old is a constant), the value is 0 on the first
  pass, and a padded log-prob of -inf cannot leak into the value.
- SAPO: the gate's gradient is -A·4σ(1-σ)·r·∇log π_θ, the plain policy gradient
  at r = 1, fading smoothly as r leaves 1 instead of a hard clip.

`actor/pg_clipfrac` counts the tokens whose gradient the clip zeroes (ppo_clip,
dual-clip included; gspo: every token of a clipped sequence), or, for cispo,
whose IS weight is clipped (its gradient is scaled, never zeroed); sapo has no
clip and reports 0.

The log-ratio is clamped to [-20, 20] before any exp (as verl does). Masked
tokens get weight 0 and a log-ratio of 0, so padding with any value (even -inf)
can never produce NaN. With several optimisation passes per batch (μ > 1) the
trainer passes the proximal log-probs (the training forward's, before the first
update) as `old_logp`; on the first pass r = 1 and clipping is inactive.

Off-policy data (`off_policy.py`, `GRPOLossConfig.off_policy`): given the
sampler's `behaviour_logp_BxC`, the `decoupled` objective (default) multiplies
pg_t by an importance weight sg(π_old / π_behav) (none, IS, truncated IS or
masked IS; with `none`, pg_t is unchanged), and the `coupled` one takes the
ratio against the behaviour log-probs instead (old := behaviour).

Metrics are named as verl names them so dashboards carry over.

This is the one implementation of the loss: it is elementwise over [B, C]
tokens, a few dozen FLOPs a token, which XLA fuses into one pass; the step's
cost is the forward and backward of the model and the log-probs over the
vocabulary (kernels/fused_logprob). A fused loss kernel that once sat in
kernels/ was never on the trainer's path and was removed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp

from rft_jax.grpo.aggregation import AGGREGATIONS, masked_mean
from rft_jax.grpo.kl import KL_ESTIMATORS
from rft_jax.grpo.off_policy import OffPolicyConfig, importance_weights


@dataclasses.dataclass(frozen=True)
class GRPOLossConfig:
    """GRPO algorithm settings. Defaults follow DAPO (arXiv 2503.14476) without KL."""

    policy_loss: Literal["ppo_clip", "gspo", "cispo", "sapo"] = "ppo_clip"
    """Policy-gradient surrogate pg_t (POLICY_LOSSES table above)."""
    epsilon_low: float = 0.2
    """ε_low: the ratio is clipped below at 1 - ε_low. GSPO clips its sequence ratio (paper: 3e-4); CISPO clips
    its IS weight and allows 1.0 (no lower bound, as in MiniMax-M1)."""
    epsilon_high: float = 0.28
    """ε_high: the ratio is clipped above at 1 + ε_high (DAPO clip-higher; = ε_low for PPO; GSPO paper: 4e-4)."""
    clip_ratio_c: float | None = None
    """c of dual-clip PPO (ppo_clip only): for A < 0 the loss is capped at -A·c, so a huge ratio cannot blow it
    up (Ye et al. 2019, verl `clip_ratio_c`, typically 3.0); None = off."""
    sapo_tau_pos: float = 1.0
    """τ_pos: temperature of SAPO's soft gate for A > 0 (paper default 1.0)."""
    sapo_tau_neg: float = 1.05
    """τ_neg: temperature for A <= 0 (paper default 1.05; > τ_pos fades negative updates faster)."""
    beta: float = 0.0
    """β: weight of the KL penalty to the reference policy. 0 needs no reference model."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    """Per-token KL estimator (see kl.py); k3 is GRPO's."""
    aggregation: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = "token-mean"
    """How token losses are averaged (see aggregation.py)."""
    norm_length: int | None = None
    """L_norm, the constant length of `seq-mean-token-sum-norm` (Dr.GRPO). None: the train step uses the generation
    budget (`StepSettings.max_new_tokens`); `grpo_loss` alone falls back to the padded width C."""
    entropy_coef: float = 0.0
    """c_H: weight of the entropy bonus (subtracted from the loss). Needs `entropy_BxC`."""
    mask_truncated: bool = False
    """Drop completions that hit the length budget from the loss (DAPO overlong filtering)."""
    off_policy: OffPolicyConfig = OffPolicyConfig()
    """Use of the behaviour (sampler) log-probs: decoupled or coupled ratio, IS correction (off_policy.py)."""

    def __post_init__(self):
        if self.policy_loss not in POLICY_LOSSES:
            raise ValueError(f"policy_loss {self.policy_loss!r} not in {sorted(POLICY_LOSSES)}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator {self.kl_estimator!r} not in {sorted(KL_ESTIMATORS)}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation {self.aggregation!r} not in {sorted(AGGREGATIONS)}")
        # Only CISPO may drop the lower bound (ε_low = 1: its IS weight is clipped to [0, 1 + ε_high]).
        low_ok = self.epsilon_low <= 1.0 if self.policy_loss == "cispo" else self.epsilon_low < 1.0
        if not (0.0 <= self.epsilon_low and low_ok and self.epsilon_high >= 0.0):
            raise ValueError(f"need 0 <= ε_low < 1 (<= 1 for cispo) and ε_high >= 0, got {self.epsilon_low}, "
                             f"{self.epsilon_high}")
        if self.clip_ratio_c is not None and (self.policy_loss != "ppo_clip" or self.clip_ratio_c <= 1.0):
            raise ValueError(f"clip_ratio_c={self.clip_ratio_c} needs policy_loss='ppo_clip' and c > 1 "
                             f"(got {self.policy_loss!r}); set it to None otherwise")
        off = self.off_policy
        if self.policy_loss == "gspo" and off.correction != "none" and off.level == "token":
            raise ValueError("policy_loss='gspo' clips a sequence-level ratio: weigh it with a sequence-level "
                             "importance weight, off_policy.level='geometric' (GSPO's own) or 'sequence'")
        if self.sapo_tau_pos <= 0.0 or self.sapo_tau_neg <= 0.0:
            raise ValueError(f"SAPO temperatures must be > 0, got {self.sapo_tau_pos}, {self.sapo_tau_neg}")


def clipped_surrogate(log_ratio, advantages, epsilon_low: float, epsilon_high: float):
    """PPO's clipped surrogate as a loss, elementwise. Returns (loss, clipped).

    `clipped` marks tokens where the clipped branch is strictly larger, i.e. where
    the clip zeroes the gradient (verl's `pg_clipfrac` counts these).
    """
    ratio = jnp.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * jnp.clip(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high)
    return jnp.maximum(unclipped, clipped), clipped > unclipped


# (log_ratio [B, C], 0 on masked tokens; advantages [B, 1]; valid bool [B, C]; cfg) -> (pg [B, C], clipped [B, C])
PolicyLossFn = Callable[[jnp.ndarray, jnp.ndarray, jnp.ndarray, GRPOLossConfig], tuple[jnp.ndarray, jnp.ndarray]]


def ppo_clip(log_ratio, advantages, valid, cfg: GRPOLossConfig):
    del valid
    pg, clipped = clipped_surrogate(log_ratio, advantages, cfg.epsilon_low, cfg.epsilon_high)
    if cfg.clip_ratio_c is None:
        return pg, clipped
    cap = -advantages * cfg.clip_ratio_c  # dual-clip: for A < 0, the loss never exceeds -A·c
    capped = (advantages < 0) & (pg > cap)
    return jnp.where(capped, cap, pg), clipped | capped


def gspo(log_ratio, advantages, valid, cfg: GRPOLossConfig):
    n_Bx1 = jnp.maximum(jnp.sum(valid, axis=-1, keepdims=True), 1)
    seq_log_ratio_Bx1 = jnp.sum(log_ratio, axis=-1, keepdims=True) / n_Bx1  # log s; masked tokens are 0
    sg = jax.lax.stop_gradient
    # value log s at every token, gradient through the token's own log-prob; capped at 10 as verl does
    log_s = jnp.minimum(sg(seq_log_ratio_Bx1) + log_ratio - sg(log_ratio), 10.0)
    return clipped_surrogate(log_s, advantages, cfg.epsilon_low, cfg.epsilon_high)


def cispo(log_ratio, advantages, valid, cfg: GRPOLossConfig):
    del valid
    ratio = jnp.exp(log_ratio)
    weight = jnp.clip(ratio, 1.0 - cfg.epsilon_low, 1.0 + cfg.epsilon_high)
    return -jax.lax.stop_gradient(weight) * advantages * log_ratio, weight != ratio


def sapo(log_ratio, advantages, valid, cfg: GRPOLossConfig):
    del valid
    tau = jnp.where(advantages > 0, cfg.sapo_tau_pos, cfg.sapo_tau_neg)
    gate = jax.nn.sigmoid(tau * (jnp.exp(log_ratio) - 1.0)) * (4.0 / tau)
    return -advantages * gate, jnp.zeros(jnp.broadcast_shapes(log_ratio.shape, advantages.shape), bool)


POLICY_LOSSES: dict[str, PolicyLossFn] = {"ppo_clip": ppo_clip, "gspo": gspo, "cispo": cispo, "sapo": sapo}


def token_terms(logp, old_logp, advantages, valid, cfg: GRPOLossConfig, ref_logp=None):
    """Per-token (pg, clipped, kl-or-None); `valid` is the bool token mask. Any shape for ppo_clip, cispo and
    sapo; gspo averages over the last axis, so it needs [B, C]."""
    log_ratio = jnp.clip(jnp.where(valid, logp - old_logp, 0.0), -20.0, 20.0)
    pg, clipped = POLICY_LOSSES[cfg.policy_loss](log_ratio, advantages, valid, cfg)
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


def check_inputs(cfg: GRPOLossConfig, ref_logp_BxC, entropy_BxC, behaviour_logp_BxC=None) -> None:
    """Fail early on settings that need an input that was not given."""
    off = cfg.off_policy
    if behaviour_logp_BxC is None and (off.objective == "coupled" or off.correction != "none"):
        raise ValueError(f"off_policy (objective={off.objective!r}, correction={off.correction!r}) needs "
                         f"behaviour_logp_BxC, the sampler's log-probs")
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
    weight_BxC=None,
    behaviour_logp_BxC=None,
):
    """Scalar GRPO loss and a metrics dict; differentiate w.r.t. `logp_BxC` (and entropy).

    `actor/kl_loss` is reported whenever `ref_logp_BxC` is given (even with β = 0),
    `actor/entropy` (a token mean, not aggregation-weighted) whenever `entropy_BxC` is given. `weight_BxC`: aggregation
    weights computed elsewhere (the train step computes them over the whole batch
    and passes each micro-batch its share); default `loss_weights` of this batch. `behaviour_logp_BxC`: the
    sampler's log-probs when `old_logp_BxC` is the proximal policy's (see off_policy.py); the `off_policy/*`
    metrics are reported whenever it is given.
    """
    check_inputs(cfg, ref_logp_BxC, entropy_BxC, behaviour_logp_BxC)
    valid_BxC, own_weight_BxC = loss_weights(mask_BxC, cfg, truncated_B)
    weight_BxC = own_weight_BxC if weight_BxC is None else jnp.where(valid_BxC, weight_BxC, 0.0)
    f32 = lambda x: None if x is None else x.astype(jnp.float32)  # noqa: E731
    logp_BxC, old_logp_BxC = f32(logp_BxC), f32(old_logp_BxC)
    adv_Bx1 = f32(advantages_B)[:, None]
    off, off_metrics = cfg.off_policy, {}
    if behaviour_logp_BxC is not None:
        is_weight_BxC, off_metrics = importance_weights(old_logp_BxC, behaviour_logp_BxC, valid_BxC, off)
        if off.objective == "coupled":  # classic PPO on off-policy data: the ratio against the sampler
            old_logp_BxC = f32(behaviour_logp_BxC)

    pg_BxC, clipped_BxC, kl_BxC = token_terms(logp_BxC, old_logp_BxC, adv_Bx1, valid_BxC, cfg, f32(ref_logp_BxC))
    if off.correction != "none":  # decoupled: the proximal/behaviour lag, corrected (none keeps pg's bits)
        pg_BxC = is_weight_BxC * pg_BxC
    pg_loss = jnp.sum(weight_BxC * pg_BxC)
    loss = pg_loss
    metrics = {
        "actor/pg_loss": pg_loss,
        "actor/pg_clipfrac": masked_mean(clipped_BxC.astype(jnp.float32), valid_BxC),
        "actor/ppo_kl": masked_mean(jnp.where(valid_BxC, old_logp_BxC - logp_BxC, 0.0), valid_BxC),
        **off_metrics,
    }
    if kl_BxC is not None:
        kl_loss = jnp.sum(weight_BxC * kl_BxC)
        loss = loss + cfg.beta * kl_loss
        metrics["actor/kl_loss"] = kl_loss
    if entropy_BxC is not None:
        entropy_BxC = jnp.where(valid_BxC, f32(entropy_BxC), 0.0)
        loss = loss - cfg.entropy_coef * jnp.sum(weight_BxC * entropy_BxC)
        # The metric is the plain token mean whatever the aggregation: weighted by Dr.GRPO's 1/L_norm it read
        # (mean length / L_norm) times too low, which the entropy-collapse alarm took for a collapse.
        metrics["actor/entropy"] = masked_mean(entropy_BxC, valid_BxC)
    return loss, metrics
