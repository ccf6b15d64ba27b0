"""A Pallas kernel on a device mesh: each device takes its share of the tokens.

XLA cannot partition a Pallas custom call. Mosaic (TPU) refuses one under a
multi-device sharding outright, and Triton (GPU) would be given every input
whole on every device, so each device would compute every token. Under
`shard_map` each device instead runs the kernel on N / devices tokens against
the whole unembedding, which is what the matmul needs anyway (FSDP gathers
the weights for it). The unembedding's gradient is the sum of the devices'
partial ones: shard_map's transpose of a replicated input adds them up.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P


def split_over_mesh(fn: Callable, mesh: Mesh) -> Callable:
    """`fn(hidden_NxD, unembed_DxV, targets_N, **kw)` with the N tokens split over every axis of `mesh`."""
    axes = tuple(mesh.axis_names)
    rows = P(axes)

    def call(hidden_NxD, unembed_DxV, targets_N, **kw):
        n = targets_N.shape[0]
        pad = -n % mesh.size  # padded tokens get zero cotangents: no gradient, and they are cut off
        if pad:
            hidden_NxD = jnp.pad(hidden_NxD, ((0, pad), (0, 0)))
            targets_N = jnp.pad(targets_N, (0, pad))
        # check_vma=False: a pallas_call has no rule for varying-axis types; its outputs vary with the tokens.
        per_device = jax.shard_map(lambda h, w, t: fn(h, w, t, **kw), mesh=mesh, in_specs=(rows, P(), rows),
                                   out_specs=(rows, rows), check_vma=False)
        logprob_N, entropy_N = per_device(hidden_NxD, unembed_DxV, targets_N)
        return logprob_N[:n], entropy_N[:n]

    return call
