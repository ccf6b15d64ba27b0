"""Data, FSDP and tensor parallelism: a mesh, one rules table, and multi-process helpers.

A leaf of the import graph: nothing here imports the rest of rft_jax. The train
step jitted with these shardings is `rft_jax.train.sharded_step`.

    mesh = make_mesh(MeshConfig(data=2, fsdp=-1, tensor=1))
    shardings = param_shardings(params, mesh)
"""

from rft_jax.parallel.distributed import (
    DistributedConfig,
    agree,
    barrier,
    gather_objects,
    initialize_distributed,
    is_primary,
    process_part,
    to_host,
)
from rft_jax.parallel.mesh import MeshConfig, make_mesh, mesh_shape, split_mesh
from rft_jax.parallel.rules import (
    RULES,
    batch_shardings,
    cache_sharding,
    logical_spec,
    lora_shardings,
    opt_state_shardings,
    param_shardings,
    place,
    replicated,
)

__all__ = [
    "RULES", "DistributedConfig", "agree", "MeshConfig", "batch_shardings", "cache_sharding", "barrier",
    "initialize_distributed", "is_primary", "logical_spec", "lora_shardings", "make_mesh",
    "mesh_shape", "opt_state_shardings", "param_shardings", "place", "process_part", "replicated", "split_mesh",
    "gather_objects", "to_host",
]
