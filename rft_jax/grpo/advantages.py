"""Advantages: how good was each sample compared with its siblings (or the batch)?

GRPO samples G completions per prompt and scores each one. The advantage of a
completion is its reward minus a baseline, so no value network is needed. The
estimators differ in the baseline and in the scale they divide by:

| mode                    | advantage                                     | from                        |
|-------------------------|-----------------------------------------------|-----------------------------|
| `grpo`                  | (r - mean_G r) / (std_G r + eps)              | DeepSeekMath, 2402.03300    |
| `drgrpo`                | r - mean_G r (no std: no difficulty bias)     | Dr.GRPO, 2503.20783         |
| `batch_std`             | (r - mean_G r) / (std_batch r + eps)          | TRL `scale_rewards="batch"` |
| `rloo`                  | r_i - mean_{j≠i} r_j = G/(G-1)·(r - mean_G r) | RLOO, 2402.14740            |
| `reinforce_pp`          | (r - mean_batch r) / (std_batch r + eps)      | REINFORCE++, 2501.03262     |
| `reinforce_pp_baseline` | c / (std_batch c + eps), c = r - mean_G r     | REINFORCE++-baseline, same  |

(Numbers are arXiv ids; verl names the last three `rloo`, `reinforce_plus_plus`
and `reinforce_plus_plus_baseline`.)

Std is the unbiased (ddof=1) estimate, as in verl and TRL. `batch_std` divides
by the std of the raw rewards (TRL), `reinforce_pp_baseline` by the std of the
group-centred ones (verl whitens the centred scores). verl whitens over tokens
(a long completion counts once per token); here every completion counts once.

A group whose rewards are all equal has exactly zero advantage in every mode but
`reinforce_pp` (the only one without a group baseline): it carries no learning
signal, which is why DAPO's dynamic sampling drops such groups (`groups_with_signal`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import jax.numpy as jnp

AdvantageFn = Callable[[jnp.ndarray, float], jnp.ndarray]


def _centered(rewards_BxG: jnp.ndarray) -> jnp.ndarray:
    # A float32 group mean can be an ulp off (seven 0.1s average to 0.1 + 7e-9), so equal rewards get exactly 0.
    centered_BxG = rewards_BxG - jnp.mean(rewards_BxG, axis=1, keepdims=True)
    return jnp.where(zero_variance_groups(rewards_BxG)[:, None], 0.0, centered_BxG)


def grpo(rewards_BxG: jnp.ndarray, eps: float) -> jnp.ndarray:
    std_Bx1 = jnp.std(rewards_BxG, axis=1, keepdims=True, ddof=1)
    return _centered(rewards_BxG) / (std_Bx1 + eps)


def drgrpo(rewards_BxG: jnp.ndarray, eps: float) -> jnp.ndarray:
    del eps  # no scaling: Dr.GRPO removes the std that over-weights easy/hard prompts
    return _centered(rewards_BxG)


def batch_std(rewards_BxG: jnp.ndarray, eps: float) -> jnp.ndarray:
    return _centered(rewards_BxG) / (jnp.std(rewards_BxG, ddof=1) + eps)


def rloo(rewards_BxG: jnp.ndarray, eps: float) -> jnp.ndarray:
    del eps
    g = rewards_BxG.shape[1]
    return _centered(rewards_BxG) * (g / (g - 1))  # the mean of the other G-1 samples as the baseline


def reinforce_pp(rewards_BxG: jnp.ndarray, eps: float) -> jnp.ndarray:
    adv_BxG = (rewards_BxG - jnp.mean(rewards_BxG)) / (jnp.std(rewards_BxG, ddof=1) + eps)
    return jnp.where(jnp.all(rewards_BxG == rewards_BxG[0, 0]), 0.0, adv_BxG)  # an all-equal batch, exactly 0


def reinforce_pp_baseline(rewards_BxG: jnp.ndarray, eps: float) -> jnp.ndarray:
    centered_BxG = _centered(rewards_BxG)
    return centered_BxG / (jnp.std(centered_BxG, ddof=1) + eps)


ADVANTAGES: dict[str, AdvantageFn] = {
    "grpo": grpo,
    "drgrpo": drgrpo,
    "batch_std": batch_std,
    "rloo": rloo,
    "reinforce_pp": reinforce_pp,
    "reinforce_pp_baseline": reinforce_pp_baseline,
}


@dataclasses.dataclass(frozen=True)
class AdvantageConfig:
    """How rewards become advantages: reward shaping, then the group-relative estimator."""

    estimator: Literal["grpo", "drgrpo", "batch_std", "rloo", "reinforce_pp", "reinforce_pp_baseline"] = "grpo"
    """Scale of the group-relative advantage Â (table above)."""
    eps: float = 1e-6
    """ε added to the std before dividing."""
    overlong_buffer_len: int = 0
    """L_cache: tokens before the budget where DAPO's soft overlong penalty ramps up (overlong.py); 0 = off."""
    overlong_penalty_factor: float = 1.0
    """Size of the overlong penalty at the budget."""

    def __post_init__(self):
        if self.estimator not in ADVANTAGES:
            raise ValueError(f"advantage estimator {self.estimator!r} not in {sorted(ADVANTAGES)}")


def group_advantages(rewards_BxG: jnp.ndarray, mode: str = "grpo", eps: float = 1e-6) -> jnp.ndarray:
    """Advantages [B prompts, G samples]; flatten to [B*G] for the loss's `advantages_B`."""
    if rewards_BxG.ndim != 2 or rewards_BxG.shape[1] < 2:
        raise ValueError(f"rewards must be [B, G] with G >= 2, got {rewards_BxG.shape}")
    rewards_BxG = rewards_BxG.astype(jnp.float32)
    return ADVANTAGES[mode](rewards_BxG, eps)


def zero_variance_groups(rewards_BxG: jnp.ndarray) -> jnp.ndarray:
    """bool [B]: groups whose G rewards are all equal (exact test, no float tolerance)."""
    return jnp.all(rewards_BxG == rewards_BxG[:, :1], axis=1)


def groups_with_signal(rewards_BxG: jnp.ndarray) -> jnp.ndarray:
    """DAPO dynamic sampling keep-mask, bool [B]: groups with nonzero reward variance.

    The refill loop (sample more prompts until the batch is full) is the trainer's;
    this is only the pure selection rule.
    """
    return ~zero_variance_groups(rewards_BxG)
