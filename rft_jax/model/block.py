"""The pieces of one decoder layer that every path shares, with the family switches applied in one place.

A layer is: norm, q/k/v projections (+ bias, + q/k norm), RoPE, attention
(`rft_jax.model.attention`), output projection (+ post-norm), residual; then
norm, MLP (+ post-norm), residual. The training forward, the prefill, the
sampler's decode step and the server's slot decode all call these, so a family
switch (Gemma's post-norms and embedding scale, sliding-window layers with
their own RoPE base) is written once.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rft_jax.model.attention import layer_windows
from rft_jax.model.config import ModelConfig
from rft_jax.model.layers import dense, rms_norm, rope_tables
from rft_jax.model.moe import RouterStats, moe_mlp, router_stats


def layer_lora(lora: dict | None, name: str):
    """One projection's LoRA factors within one layer's adapters (None: no adapter)."""
    return None if lora is None else lora.get(name)


def embed(params: dict, tokens: jax.Array, dtype, cfg: ModelConfig | None = None) -> jax.Array:
    """Token embeddings; Gemma scales them by sqrt(hidden_size), a factor in the activations' dtype (float32
    on every path here; transformers with bf16 weights rounds it to bf16, 25.25 for 640 instead of 25.30)."""
    x = params["embed"][tokens].astype(dtype)
    if cfg is not None and cfg.embed_scale:
        x = x * jnp.asarray(cfg.hidden_size**0.5, dtype)
    return x


def activation(cfg: ModelConfig, x: jax.Array) -> jax.Array:
    return jax.nn.silu(x) if cfg.activation == "silu" else jax.nn.gelu(x, approximate=True)


def qkv_projections(cfg, p, lora, lora_scale, h, dtype):
    """Projects normed activations [..., D] to q [..., H, K] and k, v [..., J, K]."""
    q = dense(h, p["q"], layer_lora(lora, "q"), lora_scale, dtype)
    k = dense(h, p["k"], layer_lora(lora, "k"), lora_scale, dtype)
    v = dense(h, p["v"], layer_lora(lora, "v"), lora_scale, dtype)
    return split_heads(cfg, p, q, k, v)


def split_heads(cfg, p, q, k, v):
    """Heads out of projected q [..., H*K], k, v [..., J*K]; Qwen3's and Gemma's per-head q/k norms."""
    q = q.reshape(*q.shape[:-1], cfg.num_heads, cfg.head_dim)
    k = k.reshape(*k.shape[:-1], cfg.num_kv_heads, cfg.head_dim)
    v = v.reshape(*v.shape[:-1], cfg.num_kv_heads, cfg.head_dim)
    if cfg.qk_norm:
        q = rms_norm(q, p["q_norm"], cfg.rms_norm_eps)
        k = rms_norm(k, p["k_norm"], cfg.rms_norm_eps)
    return q, k, v


def sublayer_output(cfg, p, name: str, y: jax.Array) -> jax.Array:
    """A sublayer's output as it joins the residual: through Gemma's post-norm `name` when present."""
    return rms_norm(y, p[name], cfg.rms_norm_eps) if cfg.post_norms else y


def attention_output(cfg, p, lora, lora_scale, o, dtype):
    """The output projection of the attention heads [..., H*K], as added to the residual."""
    return sublayer_output(cfg, p, "attn_post_norm", dense(o, p["o"], layer_lora(lora, "o"), lora_scale, dtype))


def mlp_block(cfg, p, lora, lora_scale, x, dtype):
    """The gated MLP of one layer, or its mixture of experts, its pre-norm (and post-norm) included: what the
    layer adds to x."""
    return routed_mlp_block(cfg, p, lora, lora_scale, x, dtype)[0]


def routed_mlp_block(cfg, p, lora, lora_scale, x, dtype, router_mask=None) -> tuple[jax.Array, RouterStats | None]:
    """`mlp_block`, and for a mixture of experts given `router_mask` (x's leading shape, 1 on the tokens to
    count) the routing statistics of the load-balancing loss; else None, so nothing extra is computed."""
    h = rms_norm(x, p["mlp_norm"], cfg.rms_norm_eps)
    if cfg.num_experts:
        _refuse_expert_lora(lora)
        y, routing = moe_mlp(cfg, p, h, dtype, lambda a: activation(cfg, a))
        stats = None if router_mask is None else router_stats(routing, router_mask)
        return sublayer_output(cfg, p, "mlp_post_norm", y), stats
    gate = dense(h, p["gate"], layer_lora(lora, "gate"), lora_scale, dtype)
    up = dense(h, p["up"], layer_lora(lora, "up"), lora_scale, dtype)
    y = dense(activation(cfg, gate) * up, p["down"], layer_lora(lora, "down"), lora_scale, dtype)
    return sublayer_output(cfg, p, "mlp_post_norm", y), None


def _refuse_expert_lora(lora: dict | None) -> None:
    """Adapters on gate/up/down would be dropped silently by the experts; `lora.check_targets` says so earlier."""
    named = sorted(set(lora or ()) & {"gate", "up", "down"})
    if named:
        raise ValueError(f"LoRA adapters on {named}: a mixture-of-experts model has no dense MLP projections; "
                         "adapt the attention projections (q, k, v, o)")


class LayerSwitches(NamedTuple):
    """Per-layer settings scanned beside the weights: each layer's window (0: none) and whether it
    takes the local RoPE base."""

    window: jax.Array  # int32 [L]
    local: jax.Array  # bool [L]


def layer_switches(cfg: ModelConfig) -> LayerSwitches | None:
    """None when every layer is alike (the common case: nothing extra is scanned or compiled)."""
    windows = layer_windows(cfg)
    if not any(windows) and cfg.rope_local_theta is None:
        return None
    return LayerSwitches(jnp.asarray(windows, jnp.int32), jnp.asarray(local_rope_layers(cfg)))


def local_rope_layers(cfg: ModelConfig) -> tuple[bool, ...]:
    """Each layer's choice of RoPE base: Gemma's sliding-window layers take the local one."""
    return tuple(w > 0 and cfg.rope_local_theta is not None for w in layer_windows(cfg))


class Rope(NamedTuple):
    """cos/sin tables [..., K/2] of the global RoPE base and, for Gemma, of the local one."""

    cos: jax.Array
    sin: jax.Array
    local: tuple[jax.Array, jax.Array] | None = None


def rope(positions: jax.Array, cfg: ModelConfig) -> Rope:
    cos, sin = rope_tables(positions, cfg)
    if cfg.rope_local_theta is None:
        return Rope(cos, sin)
    return Rope(cos, sin, rope_tables(positions, cfg, theta=cfg.rope_local_theta, local=True))


def layer_rope(r: Rope, local) -> tuple[jax.Array, jax.Array]:
    """The (cos, sin) one layer uses: `local` a Python bool (decode's unrolled layers) or a scanned one."""
    if r.local is None:
        return r.cos, r.sin
    if isinstance(local, bool):
        return r.local if local else (r.cos, r.sin)
    return jnp.where(local, r.local[0], r.cos), jnp.where(local, r.local[1], r.sin)
