"""KL(π_θ || π_ref) per token, estimated from one sample (Schulman, "Approximating KL").

Every estimator is a function of x = log π_ref(y) - log π_θ(y) for the sampled
token y ~ π_θ (the rollout). Their expectations under π_θ all equal the KL, but:

| name | value            | note                                                    |
|------|------------------|---------------------------------------------------------|
| k1   | -x               | unbiased, high variance, can be negative                |
| k2   | x² / 2           | biased, low variance; its gradient is the true KL's      |
| k3   | eˣ - x - 1       | unbiased, low variance, always >= 0; GRPO's default      |

k3 exponentiates, so, as verl's `low_var_kl` does, x is clamped to [-20, 20]
before the exp and the result to [-10, 10]: a token the policy has pushed far
from the reference (log-ratio 100, say) gives a finite, bounded penalty instead
of inf (and NaN gradients). k1 and k2 have no exp and are finite for finite x.
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
    x = jnp.clip(ref_log_ratio, -20.0, 20.0)
    return jnp.clip(jnp.exp(x) - x - 1.0, -10.0, 10.0)


KL_ESTIMATORS: dict[str, KLEstimator] = {"k1": k1, "k2": k2, "k3": k3}
