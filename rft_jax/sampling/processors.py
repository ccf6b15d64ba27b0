"""Turning logits into a sampling distribution: temperature, top-k, top-p, min-p.

Filters are applied only when enabled (static Python values), so the common
case (temperature only) pays for no sort over the vocabulary.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

_NEG = -1e30


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How the next token is drawn."""

    temperature: float = 1.0
    """Softmax temperature; 0 means greedy."""
    top_k: int = 0
    """Keep the k most likely tokens (0: off)."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set with this much probability (1: off)."""
    min_p: float = 0.0
    """Drop tokens below min_p times the top token's probability (0: off)."""

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def sampling_logprobs(logits_xV: jax.Array, params: SamplingParams) -> jax.Array:
    """Log-probabilities of the distribution actually sampled from (filtered tokens get -inf-ish)."""
    x = logits_xV.astype(jnp.float32)
    if not params.greedy and params.temperature != 1.0:
        x = x / params.temperature
    if params.top_k > 0:
        kth = jax.lax.top_k(x, params.top_k)[0][..., -1:]
        x = jnp.where(x < kth, _NEG, x)
    if params.top_p < 1.0:
        sorted_desc = -jnp.sort(-x, axis=-1)
        probs = jax.nn.softmax(sorted_desc, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each token
        cutoff = jnp.min(jnp.where(before < params.top_p, sorted_desc, jnp.inf), axis=-1, keepdims=True)
        x = jnp.where(x < cutoff, _NEG, x)
    if params.min_p > 0.0:
        logp = jax.nn.log_softmax(x, axis=-1)
        x = jnp.where(logp < jnp.max(logp, -1, keepdims=True) + jnp.log(params.min_p), _NEG, x)
    return jax.nn.log_softmax(x, axis=-1)


def draw(key: jax.Array, logits_xV: jax.Array, params: SamplingParams) -> tuple[jax.Array, jax.Array]:
    """(token ids, their log-probability under the sampling distribution)."""
    logp = sampling_logprobs(logits_xV, params)
    if params.greedy:
        tokens = jnp.argmax(logp, axis=-1)
    else:
        tokens = jax.random.categorical(key, logp, axis=-1)
    return tokens, jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]
