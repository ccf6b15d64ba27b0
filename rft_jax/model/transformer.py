"""The Llama-family decoder as pure functions over the parameter pytree.

Two entry points share every block:

* `sequence_forward` runs ordinary (left-padded) sequences: the training forward
  and the prompt prefill. It also returns each layer's keys and values.
* `branch_forward` runs G continuations of each prompt (a GRPO group) against
  the prompt's keys/values computed once: the training forward of the
  completions. `branch_decode_step` is the same math for the sampler's decode
  loop, so the prompt is run once per group in both sampling and training
  (exact, not an approximation).

Layers are stacked on a leading axis and run with `lax.scan`, so compile time
does not grow with depth; only the decode step runs per-layer lists (see there).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rft_jax.model.config import ModelConfig
from rft_jax.model.layers import apply_rope, dense, rms_norm, rope_tables

_MASKED = -1e30


class KV(NamedTuple):
    """Keys and values, e.g. k_LxBxTxJxK for a prompt or k_LxBxGxSxJxK for branches."""

    k: jax.Array
    v: jax.Array


def positions_from_mask(mask_BxT: jax.Array) -> jax.Array:
    """Left padding shifts a sequence; its first real token still gets position 0."""
    return jnp.maximum(jnp.cumsum(mask_BxT.astype(jnp.int32), axis=-1) - 1, 0)


def embed(params: dict, tokens: jax.Array, dtype) -> jax.Array:
    return params["embed"][tokens].astype(dtype)


def unembed_matrix(params: dict) -> jax.Array:
    """The [D, V] output projection; the transposed embedding when tied."""
    return params["unembed"] if "unembed" in params else params["embed"].T


def logits(params: dict, cfg: ModelConfig, hidden_xD: jax.Array, dtype=jnp.float32) -> jax.Array:
    h = rms_norm(hidden_xD, params["final_norm"], cfg.rms_norm_eps)
    return jnp.einsum("...d,dv->...v", h.astype(dtype), unembed_matrix(params).astype(dtype),
                      preferred_element_type=jnp.float32)


def layer_lora(lora: dict | None, name: str):
    """One projection's LoRA factors within one layer's adapters (None: no adapter)."""
    return None if lora is None else lora.get(name)


def qkv_projections(cfg, p, lora, lora_scale, h, dtype):
    """Projects normed activations [..., D] to q [..., H, K] and k, v [..., J, K]."""
    q = dense(h, p["q"], layer_lora(lora, "q"), lora_scale, dtype)
    k = dense(h, p["k"], layer_lora(lora, "k"), lora_scale, dtype)
    v = dense(h, p["v"], layer_lora(lora, "v"), lora_scale, dtype)
    q = q.reshape(*q.shape[:-1], cfg.num_heads, cfg.head_dim)
    k = k.reshape(*k.shape[:-1], cfg.num_kv_heads, cfg.head_dim)
    v = v.reshape(*v.shape[:-1], cfg.num_kv_heads, cfg.head_dim)
    if cfg.qk_norm:
        q = rms_norm(q, p["q_norm"], cfg.rms_norm_eps)
        k = rms_norm(k, p["k_norm"], cfg.rms_norm_eps)
    return q, k, v


def mlp_block(cfg, p, lora, lora_scale, x, dtype):
    """The SwiGLU MLP of one layer, its pre-norm included."""
    h = rms_norm(x, p["mlp_norm"], cfg.rms_norm_eps)
    gate = dense(h, p["gate"], layer_lora(lora, "gate"), lora_scale, dtype)
    up = dense(h, p["up"], layer_lora(lora, "up"), lora_scale, dtype)
    return dense(jax.nn.silu(gate) * up, p["down"], layer_lora(lora, "down"), lora_scale, dtype)


def masked_softmax(scores, mask):
    """Attention weights with masked keys excluded (a finite fill, so fully masked rows stay NaN-free)."""
    scores = jnp.where(mask, scores, _MASKED)
    return jax.nn.softmax(scores, axis=-1)


def _sequence_layer(cfg, dtype, lora_scale, x_BxTxD, p, lora, cos, sin, mask_BxTxT):
    h = rms_norm(x_BxTxD, p["attn_norm"], cfg.rms_norm_eps)
    q, k, v = qkv_projections(cfg, p, lora, lora_scale, h, dtype)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    b, t = q.shape[:2]
    j, kd = cfg.num_kv_heads, cfg.head_dim
    q_BxTxJxQxK = q.reshape(b, t, j, cfg.num_heads // j, kd)
    s = jnp.einsum("btjqk,bsjk->bjqts", q_BxTxJxQxK.astype(dtype), k.astype(dtype),
                   preferred_element_type=jnp.float32) * kd**-0.5
    w = masked_softmax(s, mask_BxTxT[:, None, None])
    o = jnp.einsum("bjqts,bsjk->btjqk", w.astype(dtype), v.astype(dtype), preferred_element_type=jnp.float32)
    o = o.reshape(b, t, cfg.num_heads * kd)
    x = x_BxTxD + dense(o, p["o"], layer_lora(lora, "o"), lora_scale, dtype).astype(x_BxTxD.dtype)
    x = x + mlp_block(cfg, p, lora, lora_scale, x, dtype).astype(x.dtype)
    return x, KV(k.astype(dtype), v.astype(dtype))


def sequence_forward(params: dict, cfg: ModelConfig, tokens_BxT: jax.Array, mask_BxT: jax.Array, *,
                     lora: dict | None = None, lora_scale: float = 1.0, dtype=jnp.float32,
                     remat: bool = False) -> tuple[jax.Array, KV]:
    """Hidden states [B, T, D] (before the final norm) and per-layer keys/values [L, B, T, J, K]."""
    mask_BxT = mask_BxT.astype(bool)
    positions = positions_from_mask(mask_BxT)
    cos, sin = rope_tables(positions, cfg)
    t = tokens_BxT.shape[1]
    causal_TxT = jnp.tril(jnp.ones((t, t), bool))
    attn_mask = causal_TxT[None] & mask_BxT[:, None, :]
    x = embed(params, tokens_BxT, jnp.float32)
    layer_lora = None if lora is None else lora["layers"]

    def body(x, layer):
        p, lp = layer
        return _sequence_layer(cfg, dtype, lora_scale, x, p, lp, cos, sin, attn_mask)

    if remat:
        body = jax.checkpoint(body)
    x, kv = jax.lax.scan(body, x, (params["layers"], layer_lora))
    return x, kv


def _branch_layer(cfg, dtype, lora_scale, x_BxGxCxD, p, lora, cos, sin, prefix_kv, prefix_mask_BxP):
    h = rms_norm(x_BxGxCxD, p["attn_norm"], cfg.rms_norm_eps)
    q, k, v = qkv_projections(cfg, p, lora, lora_scale, h, dtype)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    b, g, c = q.shape[:3]
    j, kd = cfg.num_kv_heads, cfg.head_dim
    k, v = k.astype(dtype), v.astype(dtype)
    q5 = q.reshape(b, g, c, j, cfg.num_heads // j, kd).astype(dtype)
    scale = kd**-0.5
    # Keys: the shared prompt, then these C tokens (causal).
    scores = [jnp.einsum("bgcjqk,bpjk->bgjqcp", q5, prefix_kv.k, preferred_element_type=jnp.float32)]
    masks = [jnp.broadcast_to(prefix_mask_BxP[:, None, None, None, None, :], scores[0].shape)]
    values = [("bgjqcp,bpjk->bgcjqk", prefix_kv.v)]
    s_new = jnp.einsum("bgcjqk,bgsjk->bgjqcs", q5, k, preferred_element_type=jnp.float32)
    scores.append(s_new)
    masks.append(jnp.broadcast_to(jnp.tril(jnp.ones((c, c), bool)), s_new.shape))
    values.append(("bgjqcs,bgsjk->bgcjqk", v))
    w = masked_softmax(jnp.concatenate(scores, -1) * scale, jnp.concatenate(masks, -1)).astype(dtype)
    o, start = 0.0, 0
    for (spec, val), sc in zip(values, scores):
        o = o + jnp.einsum(spec, w[..., start:start + sc.shape[-1]], val, preferred_element_type=jnp.float32)
        start += sc.shape[-1]
    o = o.reshape(b, g, c, cfg.num_heads * kd)
    x = x_BxGxCxD + dense(o, p["o"], layer_lora(lora, "o"), lora_scale, dtype).astype(x_BxGxCxD.dtype)
    x = x + mlp_block(cfg, p, lora, lora_scale, x, dtype).astype(x.dtype)
    return x, KV(k, v)


def _branch_rope(cfg, prefix_mask_BxP, q_offset, c):
    """RoPE tables of C continuation tokens starting `q_offset` after each prompt's last real token."""
    prefix_len_B = prefix_mask_BxP.sum(-1).astype(jnp.int32)
    positions = prefix_len_B[:, None, None] + q_offset + jnp.arange(c)[None, None, :]
    return rope_tables(positions, cfg)


def branch_forward(params: dict, cfg: ModelConfig, tokens_BxGxC: jax.Array, prefix_kv: KV,
                   prefix_mask_BxP: jax.Array, *, lora: dict | None = None, lora_scale: float = 1.0, dtype=jnp.float32,
                   remat: bool = False) -> tuple[jax.Array, KV]:
    """Hidden states [B, G, C, D] of G continuations of each prompt, and their keys/values [L, B, G, C, J, K]."""
    prefix_mask_BxP = prefix_mask_BxP.astype(bool)
    cos, sin = _branch_rope(cfg, prefix_mask_BxP, 0, tokens_BxGxC.shape[2])
    x = embed(params, tokens_BxGxC, jnp.float32)
    layer_lora = None if lora is None else lora["layers"]

    def body(x, layer):
        p, lp, pkv = layer
        return _branch_layer(cfg, dtype, lora_scale, x, p, lp, cos, sin, pkv, prefix_mask_BxP)

    if remat:
        body = jax.checkpoint(body)
    return jax.lax.scan(body, x, (params["layers"], layer_lora, prefix_kv))


def unstack_layers(stacked, num_layers: int) -> list:
    """A tree stacked on a leading layer axis as a list of per-layer trees (None stays None)."""
    if stacked is None:
        return [None] * num_layers
    return [jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(num_layers)]


def decode_layout(prefix_kv: KV) -> list:
    """Per-layer prompt keys k_BxJxKxP and values v_BxJxPxK, from k_LxBxPxJxK and v_LxBxPxJxK.

    These are the layouts XLA's batched matmul reads without transposing
    (batch dims first, keys with the contracted head dim before the slots):
    stored as the prefill returns them, every decode step re-transposed every
    layer's prompt keys and values, which cost more than the step's matmuls.
    """
    return [KV(prefix_kv.k[i].transpose(0, 2, 3, 1), prefix_kv.v[i].transpose(0, 2, 1, 3))
            for i in range(prefix_kv.k.shape[0])]


def empty_decode_cache(cfg: ModelConfig, b: int, g: int, s: int, dtype) -> list:
    """Per-layer branch cache in the decode layouts, branches flattened: k_RxJxKxS, v_RxJxSxK with R = B*G.

    Flat rows rather than [B, G]: with G = 1 XLA dropped the unit axis with a
    fused bitcast that duplicated the cache update and copied every layer's
    cache four times per step.
    """
    j, k = cfg.num_kv_heads, cfg.head_dim
    return [KV(jnp.zeros((b * g, j, k, s), dtype), jnp.zeros((b * g, j, s, k), dtype)) for _ in range(cfg.num_layers)]


def _decode_layer(cfg, dtype, lora_scale, step, x_BxGx1xD, p, lora, cos, sin, prefix, prefix_mask_BxP, cache):
    """One layer for one new token per branch; writes its key/value into the cache first, then attends."""
    h = rms_norm(x_BxGx1xD, p["attn_norm"], cfg.rms_norm_eps)
    q, k, v = qkv_projections(cfg, p, lora, lora_scale, h, dtype)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    b, g = q.shape[:2]
    j, kd = cfg.num_kv_heads, cfg.head_dim
    qh = cfg.num_heads // j
    cache_k = jax.lax.dynamic_update_slice(cache.k, k.reshape(b * g, j, kd, 1).astype(cache.k.dtype), (0, 0, 0, step))
    cache_v = jax.lax.dynamic_update_slice(cache.v, v.reshape(b * g, j, 1, kd).astype(cache.v.dtype), (0, 0, step, 0))
    q_BxGxJxQxK = (q[:, :, 0] * kd**-0.5).reshape(b, g, j, qh, kd).astype(dtype)
    # The prompt is shared by the G branches: its rows are the G*Q queries of each kv head.
    q_BxJxMxK = q_BxGxJxQxK.transpose(0, 2, 1, 3, 4).reshape(b, j, g * qh, kd)
    s_prefix = jnp.einsum("bjmk,bjkp->bjmp", q_BxJxMxK, prefix.k, preferred_element_type=jnp.float32)
    s_cache = jnp.einsum("rjqk,rjks->rjqs", q_BxGxJxQxK.reshape(b * g, j, qh, kd), cache_k,
                         preferred_element_type=jnp.float32)
    s_prefix = s_prefix.reshape(b, j, g, qh, -1).transpose(0, 2, 1, 3, 4)
    s_cache = s_cache.reshape(b, g, j, qh, -1)
    n_prefix = s_prefix.shape[-1]
    mask = jnp.concatenate([jnp.broadcast_to(prefix_mask_BxP[:, None, None, None, :], s_prefix.shape),
                            jnp.broadcast_to(jnp.arange(s_cache.shape[-1]) <= step, s_cache.shape)], -1)
    w = masked_softmax(jnp.concatenate([s_prefix, s_cache], -1), mask).astype(dtype)
    w_prefix = w[..., :n_prefix].transpose(0, 2, 1, 3, 4).reshape(b, j, g * qh, n_prefix)
    o_prefix = jnp.einsum("bjmp,bjpk->bjmk", w_prefix, prefix.v, preferred_element_type=jnp.float32)
    o_cache = jnp.einsum("rjqs,rjsk->rjqk", w[..., n_prefix:].reshape(b * g, j, qh, -1), cache_v,
                         preferred_element_type=jnp.float32)
    o = o_prefix.reshape(b, j, g, qh, kd).transpose(0, 2, 1, 3, 4) + o_cache.reshape(b, g, j, qh, kd)
    o = o.reshape(b, g, 1, cfg.num_heads * kd)
    x = x_BxGx1xD + dense(o, p["o"], layer_lora(lora, "o"), lora_scale, dtype).astype(x_BxGx1xD.dtype)
    x = x + mlp_block(cfg, p, lora, lora_scale, x, dtype).astype(x.dtype)
    return x, KV(cache_k, cache_v)


def branch_decode_step(params: dict, cfg: ModelConfig, layers: list, lora_layers: list, tokens_BxGx1: jax.Array,
                       prefix: list, prefix_mask_BxP: jax.Array, step: jax.Array, cache: list, *,
                       lora_scale: float = 1.0, dtype=jnp.float32) -> tuple[jax.Array, list]:
    """One decode step of G continuations: hidden states [B, G, 1, D] and the cache with this token written.

    The same math as `branch_forward` with a cache, arranged for a decode loop:
    per-layer lists (`unstack_layers`, `decode_layout`, `empty_decode_cache`)
    in a Python loop rather than `lax.scan` over stacked arrays, because a scan
    slices, that is copies, every layer's weights and cache on every step,
    which on a CPU cost more than the matmuls. Each layer writes the new
    token's key/value into its cache in place, then attends over the prompt
    and the cache up to `step`.
    """
    prefix_mask_BxP = prefix_mask_BxP.astype(bool)
    cos, sin = _branch_rope(cfg, prefix_mask_BxP, step, 1)
    x = embed(params, tokens_BxGx1, jnp.float32)
    new_cache = []
    for p, lp, pkv, kv in zip(layers, lora_layers, prefix, cache):
        x, kv = _decode_layer(cfg, dtype, lora_scale, step, x, p, lp, cos, sin, pkv, prefix_mask_BxP, kv)
        new_cache.append(kv)
    return x, new_cache
