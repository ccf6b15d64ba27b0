"""The one sharding table: logical axis names -> mesh axes, and the shardings it gives.

Every parameter dimension has a logical name (by its place in the parameter
pytree, see `PARAM_AXES`); `RULES` says which mesh axes split it. To change how
the model is sharded, edit `RULES` and nothing else.

A dimension that a mesh axis does not divide drops that axis (it is replicated
over it instead), as in big_vision's FSDP rule; e.g. 3 KV heads on tensor=2.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# logical axis -> mesh axes that split it (in order; () = replicated).
RULES: dict[str, tuple[str, ...]] = {
    "batch": ("data", "fsdp"),  # B: prompts of a rollout batch
    "embed": ("fsdp",),  # D: model width of weights
    "heads": ("tensor",),  # H*K: query heads (q out, o in)
    "kv_heads": ("tensor",),  # J*K in k/v weights, J in the KV cache
    "mlp": ("tensor",),  # F
    "expert": ("tensor",),  # E: a mixture's experts, split as the dense MLP's F is (rft_jax/model/moe.py)
    "vocab": ("tensor",),  # V
    "layers": (),  # L: scanned, never split
    "lora_rank": (),  # R
    "norm": (),  # D of norm scales (tiny)
    "head_dim": (),  # K
    "group": (),  # G
    "length": (),  # P, C, T
    "cache": (),  # S: KV-cache slots
}

# Where each tensor of the parameter pytree (docs/DESIGN.md) gets its logical axes.
TOP_AXES = {"embed": ("vocab", "embed"), "unembed": ("embed", "vocab"), "final_norm": ("norm",)}
LAYER_AXES = {"attn_norm": ("norm",), "mlp_norm": ("norm",), "q_norm": ("head_dim",), "k_norm": ("head_dim",),
              "attn_post_norm": ("norm",), "mlp_post_norm": ("norm",)}  # the last two: Gemma's post-norms
PROJECTION_AXES = {  # (in, out) of each projection
    "q": ("embed", "heads"), "k": ("embed", "kv_heads"), "v": ("embed", "kv_heads"), "o": ("heads", "embed"),
    "gate": ("embed", "mlp"), "up": ("embed", "mlp"), "down": ("mlp", "embed"),
    "router": ("embed", "expert"),
}
EXPERT_AXES = {"gate": ("expert", "embed", "mlp"), "up": ("expert", "embed", "mlp"),  # [E, in, out]
               "down": ("expert", "mlp", "embed")}
KV_CACHE_AXES = ("layers", "batch", "group", "cache", "kv_heads", "head_dim")  # k_LxBxGxSxJxK
PREFIX_KV_AXES = ("layers", "batch", "length", "kv_heads", "head_dim")  # k_LxBxPxJxK
# The sampler's per-layer decode layouts (rft_jax.model.transformer.decode_layout / empty_decode_cache);
# cache rows are R = B*G, prompt-major, so splitting them splits the prompts.
DECODE_PREFIX_AXES = {"k": ("batch", "kv_heads", "head_dim", "length"), "v": ("batch", "kv_heads", "length", "head_dim")}
DECODE_CACHE_AXES = {"k": ("batch", "kv_heads", "head_dim", "cache"), "v": ("batch", "kv_heads", "cache", "head_dim")}


def logical_spec(axes: tuple[str, ...], shape: tuple[int, ...], mesh: Mesh,
                 rules: dict[str, tuple[str, ...]] = RULES) -> PartitionSpec:
    """The PartitionSpec of an array whose dimensions have these logical names."""
    if len(axes) != len(shape):
        raise ValueError(f"logical axes {axes} do not match shape {shape}")
    used: set[str] = set()
    spec = []
    for name, size in zip(axes, shape):
        if name not in rules:
            raise KeyError(f"logical axis {name!r} has no rule; add it to rft_jax/parallel/rules.py RULES")
        mesh_axes = [a for a in rules[name] if a not in used and mesh.shape[a] > 1]
        while mesh_axes and size % math.prod(mesh.shape[a] for a in mesh_axes):
            mesh_axes.pop()  # drop the innermost axis until the rest divides the dimension
        used.update(mesh_axes)
        spec.append(None if not mesh_axes else mesh_axes[0] if len(mesh_axes) == 1 else tuple(mesh_axes))
    return PartitionSpec(*spec)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def _keys(path) -> list[str]:
    return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]


def param_axes(path: list[str]) -> tuple[str, ...]:
    """Logical axes of the parameter at `path` (e.g. ["layers", "q", "w"])."""
    if path[0] != "layers":
        return TOP_AXES[path[0]]
    if path[1] in LAYER_AXES:
        return ("layers", *LAYER_AXES[path[1]])
    if path[1] == "experts":
        return ("layers", *EXPERT_AXES[path[2]])
    n_in, n_out = PROJECTION_AXES[path[1]]
    return {"w": ("layers", n_in, n_out), "b": ("layers", n_out)}[path[2]]


def lora_axes(path: list[str]) -> tuple[str, ...]:
    """Logical axes of a LoRA adapter: a [L, in, R], b [L, R, out]."""
    n_in, n_out = PROJECTION_AXES[path[1]]
    return {"a": ("layers", n_in, "lora_rank"), "b": ("layers", "lora_rank", n_out)}[path[2]]


def _shardings(tree, mesh: Mesh, axes_fn) -> dict:
    def one(path, x):
        keys = _keys(path)
        try:
            axes = axes_fn(keys)
        except (KeyError, IndexError) as err:
            raise KeyError(f"no logical axes for {'.'.join(keys)}; add it to rft_jax/parallel/rules.py") from err
        return NamedSharding(mesh, logical_spec(axes, np.shape(x), mesh))
    return jax.tree_util.tree_map_with_path(one, tree)


def param_shardings(params, mesh: Mesh):
    """NamedSharding of every model parameter (arrays or ShapeDtypeStructs)."""
    return _shardings(params, mesh, param_axes)


def lora_shardings(lora, mesh: Mesh):
    """NamedSharding of every LoRA adapter matrix."""
    return _shardings(lora, mesh, lora_axes)


def opt_state_shardings(optimizer, opt_state, trainable_shardings, mesh: Mesh):
    """Each optimizer moment sharded like its parameter; counters and other scalars replicated."""
    import optax  # noqa: PLC0415

    return optax.tree_map_params(optimizer, lambda _, sharding: sharding, opt_state, trainable_shardings,
                                 transform_non_params=lambda _: replicated(mesh))


def batch_shardings(batch, mesh: Mesh):
    """Every leaf split on its leading batch axis, the rest whole (RolloutBatch, prompts, rewards)."""
    return jax.tree.map(lambda x: NamedSharding(mesh, logical_spec(
        ("batch",) + ("length",) * (np.ndim(x) - 1), np.shape(x), mesh)), batch)


def cache_sharding(shape: tuple[int, ...], mesh: Mesh) -> NamedSharding:
    """The sampler's branch KV cache k_LxBxGxSxJxK (or a prompt's k_LxBxPxJxK)."""
    axes = KV_CACHE_AXES if len(shape) == len(KV_CACHE_AXES) else PREFIX_KV_AXES
    return NamedSharding(mesh, logical_spec(axes, tuple(shape), mesh))


def decode_kv_shardings(kv_layers: list, mesh: Mesh, *, prefix: bool) -> list:
    """Shardings of the sampler's per-layer prompt keys/values (`prefix`) or branch cache."""
    axes = DECODE_PREFIX_AXES if prefix else DECODE_CACHE_AXES
    return [type(kv)(*(NamedSharding(mesh, logical_spec(axes[name], np.shape(x), mesh))
                       for name, x in zip(("k", "v"), kv))) for kv in kv_layers]


def place(tree, shardings):
    """Host or single-device values -> global arrays with these shardings.

    On several processes every process passes the same full value and keeps only
    the shards of its own devices.
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)

    def one(x, sharding):
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
    return jax.tree.map(one, tree, shardings)
