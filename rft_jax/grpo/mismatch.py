"""How far the sampler's log-probs are from the trainer's on the same tokens (train/inference mismatch).

The sampler and the training forward compute the same policy by different code
(a KV-cached decode with fused projections, against a full forward; both keep
LoRA adapters separate from the weights), and top-k/top-p filtering changes the
sampled distribution. On-policy GRPO assumes they agree. With the sampler's log-probs
s and the trainer's t of each sampled token, x = t - s:

    kl    = mean(eˣ - x - 1)      k3 estimate of KL(sampler || trainer) under the sampler's tokens
    max   = max |x|
    share = share of tokens with |x| > 1e-3
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

THRESHOLD = 1e-3


def mismatch_metrics(train_logp: jax.Array, sampler_logp: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
    """`mismatch/kl`, `mismatch/max_abs_logp_diff` and `mismatch/frac_above_1e-3` over the masked tokens."""
    x = jnp.where(mask, jnp.clip(train_logp - sampler_logp, -20.0, 20.0), 0.0)
    count = jnp.maximum(jnp.sum(mask), 1)
    return {"mismatch/kl": jnp.sum(jnp.where(mask, jnp.exp(x) - x - 1.0, 0.0)) / count,
            "mismatch/max_abs_logp_diff": jnp.max(jnp.abs(x)),
            "mismatch/frac_above_1e-3": jnp.sum(mask & (jnp.abs(x) > THRESHOLD)) / count}
