"""Off-policy correction: learning from episodes a stale (or slightly different) policy sampled.

Three policies meet in one update (sg = stop-gradient):

    π_behav   the sampler's policy; its log-probs ride with every episode (`RolloutBatch.old_logp_BxGxC`)
    π_prox    the proximal policy: the parameters before this step's first update (sg(π_θ) with one update
              per step; recomputed by the training forward with several, `Trainer.update`)
    π_θ       the policy being trained

They differ by staleness (asynchronous RL samples with a policy up to K updates old) and by the
sampler/trainer mismatch (a KV-cached decode, top-k/top-p filtering: rft_jax/grpo/mismatch.py).

`objective` picks the ratio that PPO clips:

    decoupled   r = π_θ / π_prox,   pg_t = w_t · max(-A·r, -A·clip(r, 1 - ε_low, 1 + ε_high))
    coupled     r = π_θ / π_behav,  pg_t =       max(-A·r, -A·clip(r, 1 - ε_low, 1 + ε_high))

Decoupled is the proximal-policy objective (Hilton et al. 2022, "Batch size-invariance for policy
optimization"; AReaL): the clip bounds the step from the policy the trainer holds, and the lag between the
proximal and the behaviour policy is corrected by an importance weight w = sg(π_prox / π_behav), chosen by
`correction` (w = 1 with "none": today's objective, bit for bit). Coupled is classic PPO on off-policy data:
the clip bounds the step from the sampling policy, so with a large lag most tokens sit outside the clip
range and stop learning; it needs no weight (`correction` must be "none").

`level` says which w a token gets; log w_t = log π_prox(y_t) - log π_behav(y_t), summed over the
sequence's loss tokens only:

| level       | w of token t of sequence b         |
|-------------|------------------------------------|
| `token`     | exp(log w_t)                       |
| `sequence`  | exp(Σ_t log w_t): the same for every token of b (unbiased for a sequence reward, high variance) |
| `geometric` | exp(mean_t log w_t): the length-normalised middle ground (as GSPO's ratio) |

`correction` maps w to the weight that multiplies each token's policy-gradient term:

| correction | weight                         | from                                          |
|------------|--------------------------------|-----------------------------------------------|
| `none`     | 1                              | on-policy GRPO                                |
| `is`       | w                              | the untruncated decoupled objective           |
| `tis`      | min(w, C)                      | Yao et al. 2025 (truncated IS, "Your efficient RL framework secretly brings you off-policy RL training") |
| `mask`     | w if low <= w <= C, else 0     | masked IS ("When speed kills stability"; IcePop) |

C is `cap`, low is `mask_low`. A masked token's term is zeroed but it stays in the aggregation's normaliser
(aggregation.py), so the other tokens keep their weight. Every log-weight is clamped to [-20, 20] before the
exp (as the loss clamps its log-ratio), invalid tokens get log w = 0 and weight 0, so padding with -inf
never gives NaN, and no gradient flows through the weight.

When to use which: synchronous on-policy training (K = 0, one update) needs nothing, though `tis` also
absorbs the sampler/trainer mismatch. Asynchronous training with staleness K > 0: keep `decoupled` and
set `tis` (C = 2), or `mask` when a few tokens with huge ratios (a sampler bug, a very stale episode)
should leave the loss rather than count at C. `coupled` is the simplest baseline to compare against.

Metrics, over the valid tokens (reported whenever the behaviour log-probs reach the loss):
`off_policy/is_ratio_mean` and `off_policy/is_ratio_max` of the raw w at the chosen level,
`off_policy/masked_frac` (share the mask zeroes) and `off_policy/truncated_frac` (share TIS caps).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp

from rft_jax.grpo.aggregation import masked_mean

LOG_WEIGHT_BOUND = 20.0  # log w is clamped to [-20, 20] before the exp, as the loss's log-ratio
OBJECTIVES = ("decoupled", "coupled")


@dataclasses.dataclass(frozen=True)
class OffPolicyConfig:
    """How the loss uses the behaviour (sampler) log-probs. The default reproduces on-policy GRPO."""

    objective: Literal["decoupled", "coupled"] = "decoupled"
    """decoupled: PPO's ratio against the proximal policy, and the proximal/behaviour lag corrected by the IS
    weight of `correction` (Hilton et al. 2022; AReaL). coupled: the ratio against the behaviour log-probs, so
    the clip bounds the step from the sampling policy (needs correction='none')."""
    correction: Literal["none", "is", "tis", "mask"] = "none"
    """Weight of each token's policy-gradient term, from w = π_prox / π_behav: none = 1, is = w, tis = min(w, C)
    (Yao et al. 2025), mask = w where mask_low <= w <= C, else 0 (IcePop-style masked IS)."""
    level: Literal["token", "sequence", "geometric"] = "token"
    """Where w is measured: token = per token; sequence = the product over the sequence's loss tokens;
    geometric = that product's geometric mean (exp of the mean log-ratio)."""
    cap: float = 2.0
    """C: TIS truncates w at C, and the mask drops weights above C (>= 1)."""
    mask_low: float = 0.0
    """The mask's lower threshold: weights below it are dropped (0 <= mask_low < 1; 0 = no lower bound)."""

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"off_policy.objective {self.objective!r} not in {list(OBJECTIVES)}")
        if self.correction not in CORRECTIONS:
            raise ValueError(f"off_policy.correction {self.correction!r} not in {sorted(CORRECTIONS)}")
        if self.level not in LEVELS:
            raise ValueError(f"off_policy.level {self.level!r} not in {sorted(LEVELS)}")
        if self.objective == "coupled" and self.correction != "none":
            raise ValueError(f"off_policy.objective='coupled' takes the ratio against the behaviour log-probs, so "
                             f"there is no proximal/behaviour lag to weight: set off_policy.correction='none', or "
                             f"keep correction={self.correction!r} with objective='decoupled'")
        if not self.cap >= 1.0:
            raise ValueError(f"off_policy.cap must be >= 1 (a weight of 1 is on-policy), got {self.cap}")
        if not 0.0 <= self.mask_low < 1.0:
            raise ValueError(f"off_policy.mask_low must be in [0, 1) (a weight of 1 must be kept), got {self.mask_low}")
        # (level is always read: the off_policy/is_ratio_* metrics are measured at it)
        unused = {name: value for name, value, default, used in (
            ("cap", self.cap, 2.0, self.correction in ("tis", "mask")),
            ("mask_low", self.mask_low, 0.0, self.correction == "mask")) if value != default and not used}
        if unused:
            raise ValueError(f"off_policy {unused} would have no effect with correction={self.correction!r}: set "
                             "correction (tis uses cap, mask uses cap and mask_low)")


# (log w [B, C], 0 on invalid tokens; valid bool [B, C]) -> log w at the level, [B, C]
LevelFn = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]


def token_level(log_w_BxC, valid_BxC):
    del valid_BxC
    return log_w_BxC


def sequence_level(log_w_BxC, valid_BxC):
    del valid_BxC
    return jnp.broadcast_to(jnp.sum(log_w_BxC, axis=-1, keepdims=True), log_w_BxC.shape)


def geometric_level(log_w_BxC, valid_BxC):
    n_Bx1 = jnp.maximum(jnp.sum(valid_BxC, axis=-1, keepdims=True), 1)
    return jnp.broadcast_to(jnp.sum(log_w_BxC, axis=-1, keepdims=True) / n_Bx1, log_w_BxC.shape)


LEVELS: dict[str, LevelFn] = {"token": token_level, "sequence": sequence_level, "geometric": geometric_level}

# (w [B, C], cfg) -> (weight [B, C], masked bool [B, C], truncated bool [B, C]); the caller applies the token mask
CorrectionFn = Callable[[jnp.ndarray, OffPolicyConfig], tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]]


def no_correction(w, cfg: OffPolicyConfig):
    del cfg
    none = jnp.zeros(w.shape, bool)
    return jnp.ones_like(w), none, none


def importance_sampling(w, cfg: OffPolicyConfig):
    del cfg
    none = jnp.zeros(w.shape, bool)
    return w, none, none


def truncated_is(w, cfg: OffPolicyConfig):
    return jnp.minimum(w, cfg.cap), jnp.zeros(w.shape, bool), w > cfg.cap


def masked_is(w, cfg: OffPolicyConfig):
    keep = (w >= cfg.mask_low) & (w <= cfg.cap)
    return jnp.where(keep, w, 0.0), ~keep, jnp.zeros(w.shape, bool)


CORRECTIONS: dict[str, CorrectionFn] = {"none": no_correction, "is": importance_sampling, "tis": truncated_is,
                                        "mask": masked_is}


def importance_weights(prox_logp_BxC, behaviour_logp_BxC, valid_BxC,
                       cfg: OffPolicyConfig) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """(weight_BxC f32, metrics): the weight multiplying each token's policy-gradient term, 0 on invalid tokens
    and constant to autodiff, and the `off_policy/*` metrics over the valid tokens. [B, C] inputs (the
    sequence levels reduce over the last axis)."""
    sg = jax.lax.stop_gradient
    valid_BxC = valid_BxC.astype(bool)
    x_BxC = sg(prox_logp_BxC).astype(jnp.float32) - sg(behaviour_logp_BxC).astype(jnp.float32)
    log_w_BxC = jnp.clip(jnp.where(valid_BxC, x_BxC, 0.0), -LOG_WEIGHT_BOUND, LOG_WEIGHT_BOUND)
    log_w_BxC = jnp.clip(LEVELS[cfg.level](log_w_BxC, valid_BxC), -LOG_WEIGHT_BOUND, LOG_WEIGHT_BOUND)
    w_BxC = jnp.where(valid_BxC, jnp.exp(log_w_BxC), 0.0)
    weight_BxC, masked_BxC, truncated_BxC = CORRECTIONS[cfg.correction](w_BxC, cfg)
    frac = lambda x: masked_mean((x & valid_BxC).astype(jnp.float32), valid_BxC)  # noqa: E731
    metrics = {
        "off_policy/is_ratio_mean": masked_mean(w_BxC, valid_BxC),
        "off_policy/is_ratio_max": jnp.max(w_BxC),  # w > 0 on valid tokens, 0 elsewhere
        "off_policy/masked_frac": frac(masked_BxC),
        "off_policy/truncated_frac": frac(truncated_BxC),
    }
    return jnp.where(valid_BxC, weight_BxC, 0.0).astype(jnp.float32), metrics
