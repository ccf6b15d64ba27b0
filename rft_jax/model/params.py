"""The parameter pytree: its expected shapes, random initialisation and dtype casts.

Checkpoint loaders build a flat `{path: array}` mapping and call
`assemble_params`, which checks every shape against the config so that a
mismatch names the tensor instead of failing deep inside a matmul.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rft_jax.model.config import ModelConfig

PROJECTIONS = ("q", "k", "v", "o", "gate", "up", "down")


class WeightsError(ValueError):
    """Weights that do not fit the model config."""


def projection_shapes(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    """(in, out) of each linear projection in a layer."""
    d, f, k = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    return {
        "q": (d, cfg.num_heads * k),
        "k": (d, cfg.num_kv_heads * k),
        "v": (d, cfg.num_kv_heads * k),
        "o": (cfg.num_heads * k, d),
        "gate": (d, f),
        "up": (d, f),
        "down": (f, d),
    }


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
    return shapes


def _nest(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def assemble_params(cfg: ModelConfig, top: dict[str, np.ndarray], layers: list[dict[str, np.ndarray]],
                    dtype=jnp.float32, source: str = "checkpoint") -> dict:
    """Stacks per-layer tensors on a leading L axis after checking every shape.

    `top` holds "embed", "final_norm" and optionally "unembed" ([D, V]);
    `layers[i]` holds the names of `layer_shapes` with projection weights
    already in [in, out] layout.
    """
    if len(layers) != cfg.num_layers:
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
    for i, layer in enumerate(layers):
        missing = sorted(set(expected) - set(layer))
        if missing:
            raise WeightsError(f"{source}: layer {i} lacks tensors {missing}")
        for name, shape in expected.items():
            if tuple(layer[name].shape) != shape:
                raise WeightsError(
                    f"{source}: tensor layers.{i}.{name} has shape {tuple(layer[name].shape)}, config expects {shape}"
                )
    stacked = {name: np.stack([layer[name] for layer in layers]) for name in expected}
    params = {k: top[k] for k in expected_top}
    params["layers"] = _nest(stacked)
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), params)


def read_layers(cfg: ModelConfig, proj_name, norm_name, take, transform=None) -> list[dict[str, np.ndarray]]:
    """Per-layer tensors in our layout from a checkpoint's naming scheme.

    `proj_name(i, ours)` / `norm_name(i, ours)` give the checkpoint's tensor name (without the
    `.weight`/`.bias` suffix); `take(name)` reads it as float32; `transform(ours, w_OxI)` may
    rewrite a projection before it is transposed to [in, out].
    """
    layers = []
    for i in range(cfg.num_layers):
        layer = {}
        for ours in PROJECTIONS:
            w = take(f"{proj_name(i, ours)}.weight")  # [out, in], as torch stores it
            layer[f"{ours}.w"] = (transform(ours, w) if transform else w).T
            if cfg.qkv_bias and ours in ("q", "k", "v"):
                layer[f"{ours}.b"] = take(f"{proj_name(i, ours)}.bias")
        norms = ("attn_norm", "mlp_norm") + (("q_norm", "k_norm") if cfg.qk_norm else ())
        for ours in norms:
            layer[ours] = take(f"{norm_name(i, ours)}.weight")
        layers.append(layer)
    return layers


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
