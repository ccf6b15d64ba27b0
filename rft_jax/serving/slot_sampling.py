"""Per-slot sampling: every slot of the server's batch has its own temperature, top-p and key.

The sampler's `draw` takes its settings as static values (one policy per
rollout); a server batches unrelated requests, so here they are arrays and the
top-p sort over the vocabulary runs only when some slot asks for it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rft_jax.sampling.processors import inverse_cdf_sample

_NEG = -1e30


def top_p_filter(x_SxV: jax.Array, top_p_S: jax.Array) -> jax.Array:
    """Masks tokens outside each row's nucleus (the smallest set holding top_p of the mass)."""
    sorted_desc = -jnp.sort(-x_SxV, axis=-1)
    probs = jax.nn.softmax(sorted_desc, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each token
    cutoff = jnp.min(jnp.where(before < top_p_S[:, None], sorted_desc, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(x_SxV < cutoff, _NEG, x_SxV)


def slot_draw(keys_Sx2: jax.Array, logits_SxV: jax.Array, temperature_S: jax.Array,
              top_p_S: jax.Array) -> jax.Array:
    """Next token of each slot: argmax where temperature is 0, else a draw from the filtered softmax."""
    x = logits_SxV.astype(jnp.float32)
    greedy_S = temperature_S <= 0.0
    x = x / jnp.where(greedy_S, 1.0, temperature_S)[:, None]
    x = jax.lax.cond(jnp.any(top_p_S < 1.0), top_p_filter, lambda v, _: v, x, top_p_S)
    logp_SxV = jax.nn.log_softmax(x, axis=-1)
    sampled = jax.vmap(lambda k, lp: inverse_cdf_sample(k, lp[None])[0])(keys_Sx2, logp_SxV)
    return jnp.where(greedy_S, jnp.argmax(logits_SxV, axis=-1), sampled).astype(jnp.int32)


def step_keys(seeds_Sx2: jax.Array, positions_S: jax.Array) -> jax.Array:
    """A key per slot and position, so a seeded request samples the same text whatever shares its batch."""
    return jax.vmap(jax.random.fold_in)(seeds_Sx2, positions_S)
