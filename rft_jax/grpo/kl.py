"""KL(π_θ || π_ref) per token, estimated from one sample (Schulman, "Approximating KL").

Every estimator is a function of x = log π_ref(y) - log π_θ(y) for the sampled
token y ~ π_θ (the rollout). Their expectations under π_θ all equal the KL, but:

| name | value            | note                                                    |
|------|------------------|---------------------------------------------------------|
| k1   | -x               | unbiased, high variance, can be negative                |
| k2   | x² / 2           | biased, low variance; its gradient is the true KL's      |
| k3   | eˣ - x - 1       | unbiased, low variance, always >= 0; GRPO's default      |

Plain elementwise jnp; kernels/grpo_loss/reference.py mirrors them and its tests check they agree.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp

KLEstimator = Callable[[jnp.ndarray], jnp.ndarray]


def k1(ref_log_ratio: jnp.ndarray) -> jnp.ndarray:
    return -ref_log_ratio


def k2(ref_log_ratio: jnp.ndarray) -> jnp.ndarray:
    return 0.5 * jnp.square(ref_log_ratio)


def k3(ref_log_ratio: jnp.ndarray) -> jnp.ndarray:
    return jnp.exp(ref_log_ratio) - ref_log_ratio - 1.0


KL_ESTIMATORS: dict[str, KLEstimator] = {"k1": k1, "k2": k2, "k3": k3}
