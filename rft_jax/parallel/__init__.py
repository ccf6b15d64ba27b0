"""Data, FSDP and tensor parallelism: a mesh, one rules table, and the sharded train step.

    mesh = make_mesh(MeshConfig(data=2, fsdp=-1, tensor=1))
    shardings = step_shardings(mesh, optimizer, state, frozen, reference, batch_size)
    step_fn = jit_sharded_train_step(optimizer, settings, shardings)
"""

from rft_jax.parallel.distributed import (DistributedConfig, gather_rows, initialize_distributed, is_primary,
                                          process_share, to_host)
from rft_jax.parallel.mesh import MeshConfig, make_mesh, mesh_shape
from rft_jax.parallel.rules import (RULES, batch_shardings, cache_sharding, lora_shardings, logical_spec,
                                    opt_state_shardings, param_shardings, place, replicated)
from rft_jax.parallel.sharded_step import StepShardings, jit_sharded_train_step, step_shardings

__all__ = [
    "RULES", "DistributedConfig", "MeshConfig", "StepShardings", "batch_shardings", "cache_sharding", "gather_rows",
    "initialize_distributed", "is_primary", "jit_sharded_train_step", "logical_spec", "lora_shardings", "make_mesh",
    "mesh_shape", "opt_state_shardings", "param_shardings", "place", "process_share", "replicated",
    "step_shardings", "to_host",
]
