"""Plain-jnp oracle: materialises the full [N, V] logits.

This is the definition every other implementation is tested against, and the
"naive" baseline of benchmarks/kernels.py. Gradients come from autodiff.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_logprobs_and_entropy(hidden_NxD: jax.Array, unembed_DxV: jax.Array,
                               targets_N: jax.Array, *,
                               temperature: float = 1.0
                               ) -> tuple[jax.Array, jax.Array]:
    """Returns (log p(target), entropy), both float32 [N].

    The logits are computed in float32 (bfloat16 inputs are accumulated in
    float32) and divided by `temperature` before the log-softmax.
    """
    logits_NxV = jnp.dot(hidden_NxD, unembed_DxV,
                         preferred_element_type=jnp.float32) / temperature
    logp_NxV = jax.nn.log_softmax(logits_NxV, axis=-1)
    logprob_N = jnp.take_along_axis(logp_NxV, targets_N[:, None], axis=-1)[:, 0]
    entropy_N = -jnp.sum(jnp.exp(logp_NxV) * logp_NxV, axis=-1)
    return logprob_N, entropy_N
