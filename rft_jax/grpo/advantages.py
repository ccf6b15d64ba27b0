"""Group-relative advantages: how good was each sample compared with its siblings?

GRPO samples G completions per prompt and scores each one. The advantage of a
completion is its reward minus the mean reward of its group, so no value network
is needed. The variants differ only in the scale they divide by:

| mode        | advantage                                   | from            |
|-------------|---------------------------------------------|-----------------|
| `grpo`      | (r - mean_G r) / (std_G r + eps)            | DeepSeekMath    |
| `drgrpo`    | r - mean_G r                                | Dr.GRPO (2503.20783), no difficulty bias |
| `batch_std` | (r - mean_G r) / (std over the batch + eps) | REINFORCE++ / TRL `scale_rewards="batch"` |

Std is the unbiased (ddof=1) estimate, as in verl and TRL. A group whose rewards
are all equal has zero advantage in every mode: it carries no learning signal,
which is why DAPO's dynamic sampling drops such groups (`groups_with_signal`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import jax.numpy as jnp

AdvantageFn = Callable[[jnp.ndarray, float], jnp.ndarray]


def _centered(rewards_BxG: jnp.ndarray) -> jnp.ndarray:
    return rewards_BxG - jnp.mean(rewards_BxG, axis=1, keepdims=True)


def grpo(rewards_BxG: jnp.ndarray, eps: float) -> jnp.ndarray:
    std_Bx1 = jnp.std(rewards_BxG, axis=1, keepdims=True, ddof=1)
    return _centered(rewards_BxG) / (std_Bx1 + eps)


def drgrpo(rewards_BxG: jnp.ndarray, eps: float) -> jnp.ndarray:
    del eps  # no scaling: Dr.GRPO removes the std that over-weights easy/hard prompts
    return _centered(rewards_BxG)


def batch_std(rewards_BxG: jnp.ndarray, eps: float) -> jnp.ndarray:
    return _centered(rewards_BxG) / (jnp.std(rewards_BxG, ddof=1) + eps)


ADVANTAGES: dict[str, AdvantageFn] = {"grpo": grpo, "drgrpo": drgrpo, "batch_std": batch_std}


@dataclasses.dataclass(frozen=True)
class AdvantageConfig:
    """How rewards become advantages: reward shaping, then the group-relative estimator."""

    estimator: Literal["grpo", "drgrpo", "batch_std"] = "grpo"
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
