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
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9
