"""This machine's matmul throughput, measured in-process so other figures can be put against it."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp


def matmul_peak_gflops(dtype=jnp.float32, n: int = 1024, repeats: int = 20) -> float:
    """Best-of-`repeats` GFLOP/s of an n x n x n matmul (float32 accumulation). On a shared machine a
    single reading can land in a slow moment: benchmarks take the best of several readings in a run."""
    a = jnp.ones((n, n), dtype)
    b = jnp.ones((n, n), dtype)
    f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    return 2 * n**3 / best_seconds(f, (a, b), repeats) / 1e9


def best_seconds(f, args: tuple, repeats: int) -> float:
    """Fastest of `repeats` timed calls of a jitted `f`, after one call that compiles it."""
    jax.block_until_ready(f(*args))
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        best = min(best, time.perf_counter() - t)
    return best


def chained_matmul_seconds(m: int, k: int, n: int, dtype, layers: int, *, weights_nxk: bool = False,
                           repeats: int = 3) -> float:
    """Best seconds of one [m, k] x [k, n] product (float32 accumulation) in a chain over `layers` distinct
    weights, as a model's layers read theirs: from memory, not from a cache holding one matrix.
    weights_nxk: the weights stored [n, k] (a tied unembedding read as the embedding)."""
    x = jnp.ones((m, k), dtype)
    ws = [jnp.full((n, k) if weights_nxk else (k, n), 1.0 + i, dtype) for i in range(layers)]
    spec = "mk,nk->mn" if weights_nxk else "mk,kn->mn"

    def chain(x, ws):
        acc = jnp.zeros((m, n), jnp.float32)
        for w in ws:
            acc = acc + jnp.einsum(spec, x, w, preferred_element_type=jnp.float32)
        return acc

    return best_seconds(jax.jit(chain), (x, ws), repeats) / layers
