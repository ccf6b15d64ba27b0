"""DAPO soft overlong punishment (arXiv 2503.14476, eq. 13): a length penalty on rewards.

Truncated answers are usually wrong for reasons unrelated to reasoning, so DAPO
adds a penalty that ramps linearly from 0 to -factor over the last
`buffer_len` (L_cache) tokens before the budget `max_len` (L_max):

    0                                   if |y| <= L_max - L_cache
    factor * ((L_max - L_cache) - |y|) / L_cache   if L_max - L_cache < |y| <= L_max
    -factor                             if |y| > L_max

The result is added to the task reward before computing advantages.
"""

from __future__ import annotations

import jax.numpy as jnp


def overlong_penalty(lengths_B: jnp.ndarray, max_len: int, buffer_len: int, factor: float = 1.0) -> jnp.ndarray:
    """Penalty [B] (<= 0) for completion lengths `lengths_B` (tokens)."""
    if not 0 < buffer_len <= max_len:
        raise ValueError(f"need 0 < buffer_len <= max_len, got {buffer_len=} {max_len=}")
    over_B = lengths_B.astype(jnp.float32) - (max_len - buffer_len)
    # The clip at -1 also covers |y| > L_max (the third case).
    return factor * jnp.clip(-over_B / buffer_len, -1.0, 0.0)
