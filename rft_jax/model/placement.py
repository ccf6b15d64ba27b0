"""Checkpoint tensors onto the device in the compute dtype, one layer (or one block of rows) at a time.

Why: reading a whole checkpoint to host float32, stacking it and casting it (the old way) held the
model three to six times over in host memory. Here each stacked [L, ...] array is allocated once on
the device in the target dtype, and every layer is cast on the host and written into it in place (a
jitted, donated dynamic_update_slice) before the next layer is read. Large single tensors (the
embeddings, 20-60% of a small model) arrive as `RowBlocks` and are written a block of rows at a time
the same way. Host memory beyond the params is then about one layer. On CPU the device is host memory,
so the params themselves are counted too: peak RSS while loading stays at 1.1-1.35x their size
(benchmarks/load_memory.py).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

BLOCK_BYTES = 4 * 2**20
"""Float32 bytes read per block of rows. Measured on SmolLM2-135M in bf16 (embeddings 113 MB in float32):
peak RSS 1.42x the params with 16 MiB blocks, 1.27x with 4 MiB, no lower with 1-2 MiB."""


@dataclasses.dataclass(frozen=True)
class RowBlocks:
    """A checkpoint tensor read lazily, a block of its leading rows at a time.

    `read(r0, r1)` returns rows r0:r1 of the tensor as stored (any float dtype); `transposed` places a
    2-D tensor as its transpose (the unembedding, stored [V, D] and used [D, V]).
    """

    stored_shape: tuple[int, ...]
    read: Callable[[int, int], np.ndarray]
    transposed: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(reversed(self.stored_shape)) if self.transposed else tuple(self.stored_shape)


def host_cast(x: np.ndarray, dtype) -> np.ndarray:
    """A C-contiguous host copy in `dtype` (ml_dtypes' bfloat16 for jnp.bfloat16), made in one pass."""
    return np.ascontiguousarray(x, dtype=jnp.dtype(dtype))


@functools.partial(jax.jit, donate_argnums=0)
def _write_layer(stacked: dict, layer: dict, i) -> dict:
    return jax.tree.map(lambda s, x: jax.lax.dynamic_update_index_in_dim(s, x, i, 0), stacked, layer)


@functools.partial(jax.jit, donate_argnums=0, static_argnums=3)
def _write_block(out: jax.Array, block: jax.Array, start, axis: int) -> jax.Array:
    return jax.lax.dynamic_update_slice_in_dim(out, block, start, axis)


def place(x: np.ndarray | RowBlocks, dtype) -> jax.Array:
    """One tensor on the device in `dtype`; a RowBlocks larger than BLOCK_BYTES goes a block at a time."""
    if not isinstance(x, RowBlocks):
        return jax.device_put(host_cast(x, dtype))
    rows = x.stored_shape[0]
    step = max(1, BLOCK_BYTES // (4 * max(1, math.prod(x.stored_shape[1:]))))
    if step >= rows:
        block = x.read(0, rows)
        return jax.device_put(host_cast(block.T if x.transposed else block, dtype))
    out = jnp.zeros(x.shape, dtype)
    axis = 1 if x.transposed else 0
    for r0 in range(0, rows, step):
        block = x.read(r0, min(r0 + step, rows))
        block = jax.device_put(host_cast(block.T if x.transposed else block, dtype))
        out = jax.block_until_ready(_write_block(out, block, r0, axis))  # one block in flight at a time
    return out


def place_layers(shapes: Mapping[str, tuple[int, ...]], num_layers: int, dtype, layers: Iterable[dict],
                 check: Callable[[int, dict], None]) -> tuple[dict[str, jax.Array], int]:
    """Stacks an iterable of per-layer tensors into device arrays [num_layers, *shape], a layer at a time.

    `check(i, layer)` raises on a layer that does not fit, before anything of it is placed (and must
    raise for i >= num_layers: the device write would clamp the index). Returns the
    stacked arrays and how many layers the iterable gave, which the caller compares with the config.
    """
    stacked = {name: jnp.zeros((num_layers, *shape), dtype) for name, shape in shapes.items()}
    count = 0
    for i, layer in enumerate(layers):
        check(i, layer)
        host = {name: host_cast(layer[name], dtype) for name in shapes}
        del layer  # the reader's own reference goes when it reads the next layer
        stacked = jax.block_until_ready(_write_layer(stacked, host, i))
        del host
        count = i + 1
    return stacked, count
