"""The device mesh: three named axes, `data` x `fsdp` x `tensor`.

* data:   replicas of the parameters, each on a slice of the batch (gradients all-reduced).
* fsdp:   the batch is split too, and so are parameters and optimizer state (gathered per layer).
* tensor: attention heads, MLP width and vocabulary split across devices (activations all-reduced).

`tensor` is the innermost (fastest-varying) axis, so on a multi-host cluster it
stays inside a host (NVLink / ICI), and `data` is the outermost, so it spans hosts.
"""

from __future__ import annotations

import dataclasses
import math

import jax
from jax.sharding import AxisType, Mesh

AXES = ("data", "fsdp", "tensor")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """How the devices are laid out: data x fsdp x tensor must equal the device count."""

    data: int = 1
    """Data-parallel replicas (full copies of the parameters)."""
    fsdp: int = -1
    """Fully sharded data parallel: parameters, optimizer state and batch split this many ways (-1: the rest)."""
    tensor: int = 1
    """Tensor parallel: heads, MLP width and vocabulary split this many ways (keep it within a host)."""


def mesh_shape(cfg: MeshConfig, num_devices: int) -> tuple[int, int, int]:
    """(data, fsdp, tensor) with at most one -1 resolved to the devices left over."""
    sizes = (cfg.data, cfg.fsdp, cfg.tensor)
    free = [i for i, s in enumerate(sizes) if s == -1]
    if len(free) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh {dict(zip(AXES, sizes))}: each axis is a positive size, and at most one is -1")
    known = math.prod(s for s in sizes if s != -1)
    if free:
        if num_devices % known:
            raise ValueError(f"mesh {dict(zip(AXES, sizes))}: {num_devices} devices are not divisible by {known}")
        sizes = tuple(num_devices // known if s == -1 else s for s in sizes)
    if math.prod(sizes) != num_devices:
        raise ValueError(f"mesh {dict(zip(AXES, sizes))} needs {math.prod(sizes)} devices, "
                         f"but {num_devices} are present")
    return sizes


def make_mesh(cfg: MeshConfig = MeshConfig(), devices=None) -> Mesh:
    """A mesh over `devices` (default: every device of every process), in JAX's topology-aware order."""
    devices = jax.devices() if devices is None else list(devices)
    shape = mesh_shape(cfg, len(devices))
    # Auto axes: shardings are given at jit boundaries and propagated inside by the compiler.
    return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * len(AXES), devices=devices)


def split_mesh(train: MeshConfig, rollout: MeshConfig, rollout_devices: int, devices=None) -> tuple[Mesh, Mesh]:
    """(rollout mesh, training mesh): the first `rollout_devices` devices sample, the rest train.

    Asynchronous RL samples and trains at the same time; on separate devices neither waits for the other's
    kernels, and only the parameters cross over after each update.
    """
    devices = jax.devices() if devices is None else list(devices)
    if not 0 < rollout_devices < len(devices):
        raise ValueError(f"rollout_devices={rollout_devices}: need at least one device to sample and one to train, "
                         f"and {len(devices)} are present")
    return make_mesh(rollout, devices[:rollout_devices]), make_mesh(train, devices[rollout_devices:])
