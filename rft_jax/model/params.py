"""The parameter pytree: its expected shapes, random initialisation and dtype casts.

Checkpoint loaders build a flat `{path: array}` mapping and call
`assemble_params`, which checks every shape against the config so that a
mismatch names the tensor instead of failing deep inside a matmul.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from rft_jax.model.config import ModelConfig
from rft_jax.model.placement import RowBlocks, place, place_layers

PROJECTIONS = ("q", "k", "v", "o", "gate", "up", "down")


class WeightsError(ValueError):
    """Weights that do not fit the model config."""


def projection_shapes(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    """(in, out) of each linear projection in a layer (the ones LoRA can adapt): a mixture-of-experts
    model has no dense gate/up/down, only attention's."""
    d, f, k = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    shapes = {
        "q": (d, cfg.num_heads * k),
        "k": (d, cfg.num_kv_heads * k),
        "v": (d, cfg.num_kv_heads * k),
        "o": (cfg.num_heads * k, d),
    }
    if not cfg.num_experts:
        shapes.update(gate=(d, f), up=(d, f), down=(f, d))
    return shapes


def expert_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """A mixture of experts' router [D, E] and stacked expert weights [E, in, out] (none for a dense model)."""
    if not cfg.num_experts:
        return {}
    d, e, f = cfg.hidden_size, cfg.num_experts, cfg.moe_intermediate_size
    return {"router.w": (d, e), "experts.gate.w": (e, d, f), "experts.up.w": (e, d, f), "experts.down.w": (e, f, d)}


def layer_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Flat names ("q.w", "attn_norm", ...) to the shape of one layer's tensor."""
    shapes: dict[str, tuple[int, ...]] = {"attn_norm": (cfg.hidden_size,), "mlp_norm": (cfg.hidden_size,)}
    for name, (n_in, n_out) in projection_shapes(cfg).items():
        shapes[f"{name}.w"] = (n_in, n_out)
    if cfg.qkv_bias:
        for name in ("q", "k", "v"):
            shapes[f"{name}.b"] = (projection_shapes(cfg)[name][1],)
    if cfg.qk_norm:
        shapes["q_norm"] = (cfg.head_dim,)
        shapes["k_norm"] = (cfg.head_dim,)
    if cfg.post_norms:
        shapes["attn_post_norm"] = (cfg.hidden_size,)
        shapes["mlp_post_norm"] = (cfg.hidden_size,)
    shapes.update(expert_shapes(cfg))
    return shapes


def tensor_kind(key: str) -> tuple[str, str]:
    """(tensor, kind) of a `layer_shapes` key: "q.w" -> ("q", "w"), "experts.up.w" -> ("experts.up", "w"),
    "q.b" -> ("q", "b"), "attn_norm" -> ("attn_norm", "norm")."""
    ours, dot, kind = key.rpartition(".")
    return (ours, kind) if dot else (key, "norm")


def _nest(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def assemble_params(cfg: ModelConfig, top: dict[str, np.ndarray | RowBlocks], layers: Iterable[dict[str, np.ndarray]],
                    dtype=jnp.float32, source: str = "checkpoint") -> dict:
    """Checks every shape and puts the tensors on the device in `dtype`, stacked on a leading L axis.

    `top` holds "embed", "final_norm" and optionally "unembed" ([D, V]), each an array or a
    `RowBlocks` read in blocks; `layers` yields (a list, or lazily from `read_layers`) the
    names of `layer_shapes` with projection weights already in [in, out] layout. Each layer is
    cast and placed before the next is read (see placement.py), so host memory holds about one
    layer beyond the params, never the model in float32.
    """
    if hasattr(layers, "__len__") and len(layers) != cfg.num_layers:
        raise WeightsError(f"{source}: found {len(layers)} layers, config says {cfg.num_layers}")
    expected_top = {"embed": (cfg.vocab_size, cfg.hidden_size), "final_norm": (cfg.hidden_size,)}
    if not cfg.tie_embeddings:
        expected_top["unembed"] = (cfg.hidden_size, cfg.vocab_size)
    for name, shape in expected_top.items():
        if name not in top:
            raise WeightsError(f"{source}: missing tensor {name!r}")
        if tuple(top[name].shape) != shape:
            raise WeightsError(f"{source}: tensor {name!r} has shape {tuple(top[name].shape)}, config expects {shape}")
    expected = layer_shapes(cfg)

    def check(i: int, layer: dict) -> None:
        if i >= cfg.num_layers:
            raise WeightsError(f"{source}: found more than {cfg.num_layers} layers, config says {cfg.num_layers}")
        missing = sorted(set(expected) - set(layer))
        if missing:
            raise WeightsError(f"{source}: layer {i} lacks tensors {missing}")
        for name, shape in expected.items():
            if tuple(layer[name].shape) != shape:
                raise WeightsError(
                    f"{source}: tensor layers.{i}.{name} has shape {tuple(layer[name].shape)}, config expects {shape}"
                )

    stacked, count = place_layers(expected, cfg.num_layers, dtype, layers, check)
    if count != cfg.num_layers:
        raise WeightsError(f"{source}: found {count} layers, config says {cfg.num_layers}")
    params = {k: place(top[k], dtype) for k in expected_top}
    params["layers"] = _nest(stacked)
    return params


def read_layers(cfg: ModelConfig, layer_name, take, transform=None,
                norm_shift: float = 0.0) -> Iterator[dict[str, np.ndarray]]:
    """Per-layer tensors in our layout from a checkpoint's naming scheme, read lazily, a layer per step.

    Lazy so that `assemble_params` places each layer before the next is read.
    `layer_name(i, ours)` gives the checkpoint's name of our tensor `ours` ("q", "attn_norm", ...) in
    layer i, without the `.weight`/`.bias` suffix; `take(name)` reads it (any float dtype);
    `transform(ours, w_OxI)` may rewrite a projection before it is transposed to [in, out];
    `norm_shift` is added to every norm scale (Gemma's HF files store w for y = x * (1 + w)).
    Expert projections ("experts.gate", ...) are stacked to [E, in, out] (`_read_experts`).
    """
    for i in range(cfg.num_layers):
        layer = {}  # drops the previous layer before reading this one
        for key in layer_shapes(cfg):
            ours, kind = tensor_kind(key)
            name = layer_name(i, ours)
            if ours.startswith("experts."):
                layer[key] = _read_experts(name, take, cfg.num_experts)
            elif kind == "w":
                w = take(f"{name}.weight")  # [out, in], as torch stores it
                layer[key] = (transform(ours, w) if transform else w).T
            elif kind == "b":
                layer[key] = take(f"{name}.bias")
            else:
                layer[key] = take(f"{name}.weight") + np.float32(norm_shift)
        yield layer


def _read_experts(name: str, take, num_experts: int) -> np.ndarray:
    """[E, in, out] of one expert projection: a tensor per expert when `name` holds "{e}" (Hugging Face's
    `mlp.experts.{e}.gate_proj`), else one stacked [E, out, in] tensor (GGUF's `ffn_gate_exps`)."""
    if "{e}" in name:
        return np.stack([take(f"{name.format(e=e)}.weight").T for e in range(num_experts)])
    return take(f"{name}.weight").transpose(0, 2, 1)


def init_params(cfg: ModelConfig, key: jax.Array, dtype=jnp.float32, std: float = 0.02) -> dict:
    """Random parameters (normal weights, unit norms) for tests and benchmarks."""
    shapes = layer_shapes(cfg)
    keys = iter(jax.random.split(key, len(shapes) + 2))
    layers = {}
    for name, shape in shapes.items():
        full = (cfg.num_layers, *shape)
        if name.endswith("norm"):
            layers[name] = jnp.ones(full, dtype)
        else:
            layers[name] = (std * jax.random.normal(next(keys), full)).astype(dtype)
    params = {
        "embed": (std * jax.random.normal(next(keys), (cfg.vocab_size, cfg.hidden_size))).astype(dtype),
        "final_norm": jnp.ones((cfg.hidden_size,), dtype),
        "layers": _nest(layers),
    }
    if not cfg.tie_embeddings:
        params["unembed"] = (std * jax.random.normal(next(keys), (cfg.hidden_size, cfg.vocab_size))).astype(dtype)
    return params


def cast(params: dict, dtype) -> dict:
    return jax.tree.map(lambda x: x.astype(dtype), params)
