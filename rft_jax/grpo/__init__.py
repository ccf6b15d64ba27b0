"""GRPO as small pure functions. The loss is in `loss.py`; start reading there.

Trainer's view, per step:
    rewards_BxG += overlong_penalty(lengths, max_len, adv.overlong_buffer_len)   # optional
    keep_B = groups_with_signal(rewards_BxG)                                      # dynamic sampling
    adv_BxG = group_advantages(rewards_BxG, adv.estimator, adv.eps)             # adv: AdvantageConfig
    loss, metrics = grpo_loss(logp_BxC, old_logp_BxC, adv_BxG.reshape(-1), mask_BxC, loss_cfg, ...)
"""

from rft_jax.grpo.advantages import (
    ADVANTAGES,
    AdvantageConfig,
    group_advantages,
    groups_with_signal,
    zero_variance_groups,
)
from rft_jax.grpo.aggregation import AGGREGATIONS, masked_mean
from rft_jax.grpo.kl import KL_ESTIMATORS
from rft_jax.grpo.loss import POLICY_LOSSES, GRPOLossConfig, clipped_surrogate, grpo_loss, loss_weights, token_terms
from rft_jax.grpo.off_policy import CORRECTIONS, LEVELS, OffPolicyConfig, importance_weights
from rft_jax.grpo.optimizer import (
    OptimizerConfig,
    TrainState,
    accumulate_gradients,
    make_optimizer,
    make_schedule,
    split_microbatches,
)
from rft_jax.grpo.overlong import overlong_penalty
from rft_jax.grpo.presets import PRESETS, Preset, apply_preset

__all__ = [
    "ADVANTAGES", "AdvantageConfig", "AGGREGATIONS", "CORRECTIONS", "KL_ESTIMATORS", "LEVELS", "GRPOLossConfig",
    "OffPolicyConfig", "OptimizerConfig", "TrainState",
    "POLICY_LOSSES", "PRESETS", "Preset", "accumulate_gradients", "apply_preset", "clipped_surrogate",
    "group_advantages", "groups_with_signal", "importance_weights",
    "grpo_loss", "loss_weights", "make_optimizer", "make_schedule", "masked_mean",
    "overlong_penalty", "split_microbatches", "token_terms", "zero_variance_groups",
]
