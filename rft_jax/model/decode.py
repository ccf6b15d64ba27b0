"""One decode step of G continuations per prompt, arranged for the sampler's loop.

The math is `branch_forward`'s with a cache; what differs is the arrangement,
each choice measured in the compiled decode loop on a CPU:

* Per-layer lists rather than a `lax.scan` over stacked arrays: a scan slices,
  that is copies, every layer's weights and cache on every step.
* `decode_weights` fuses q|k|v and gate|up into one matmul each and folds LoRA
  into the weights once per sampling call: three small matmuls and fourteen
  adapter matmuls a layer become one, and the step pays no adapter cost.
* Prompt keys/values in the layouts a batched matmul reads without transposing
  (`decode_layout`), and the unembedding in its stored layout.
* The branch cache is in `storage_dtype`, float32 on a CPU: XLA's CPU backend
  has no bf16 dynamic-update-slice, and writing one token into a bf16 cache
  converted the whole cache to f32 and back on every step (15 ms a step at 64
  cached tokens, 80 ms at 512), while an f32 cache is written in place.
* Attention combines the prompt part and the cache part as two partial
  softmaxes (shared max and denominator) instead of concatenating scores.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rft_jax.model.config import ModelConfig
from rft_jax.model.layers import apply_rope, rms_norm
from rft_jax.model.precision import concat_bits, storage_dtype
from rft_jax.model.transformer import KV, branch_rope, embed

_MASKED = -1e30


def _merged(layers: dict, lora: dict | None, name: str, scale: float, dtype) -> jax.Array:
    """Stacked weight w_LxDxE in `dtype` with its adapter folded in (the sum taken in float32)."""
    w = layers[name]["w"]
    if lora is None or name not in lora["layers"]:
        return w.astype(dtype)
    ab = lora["layers"][name]
    delta = jnp.einsum("ldr,lre->lde", ab["a"].astype(jnp.float32), ab["b"].astype(jnp.float32)) * scale
    return (w.astype(jnp.float32) + delta).astype(dtype)


def decode_weights(params: dict, cfg: ModelConfig, lora: dict | None, lora_scale: float, dtype) -> dict:
    """Per-layer decode weights (q|k|v and gate|up fused, LoRA merged) and the output head."""
    stacked = params["layers"]
    merged = {n: _merged(stacked, lora, n, lora_scale, dtype) for n in ("q", "k", "v", "o", "gate", "up", "down")}
    fused = {
        "qkv": concat_bits([merged["q"], merged["k"], merged["v"]], -1),
        "o": merged["o"],
        "gate_up": concat_bits([merged["gate"], merged["up"]], -1),
        "down": merged["down"],
    }
    if cfg.qkv_bias:
        fused["qkv_b"] = jnp.concatenate([stacked[n]["b"].astype(jnp.float32) for n in ("q", "k", "v")], -1)
    for name in ("attn_norm", "mlp_norm", "q_norm", "k_norm"):
        if name in stacked:
            fused[name] = stacked[name]
    layers = [{k: v[i] for k, v in fused.items()} for i in range(cfg.num_layers)]
    # Tied: the embedding [V, D] is read as is ("rd,vd->rv"); transposing it cost 4x the matmul on a CPU.
    head = {"final_norm": params["final_norm"], "embed": params["embed"]}
    if "unembed" in params:
        head["unembed_DxV"] = params["unembed"].astype(dtype)
    else:
        head["unembed_VxD"] = params["embed"].astype(dtype)
    return {"layers": layers, "head": head}


def decode_logits(head: dict, cfg: ModelConfig, hidden_xD: jax.Array, dtype) -> jax.Array:
    """float32 logits of the last hidden states, the unembedding read in its stored layout."""
    h = rms_norm(hidden_xD, head["final_norm"], cfg.rms_norm_eps).astype(dtype)
    if "unembed_DxV" in head:
        return jnp.einsum("...d,dv->...v", h, head["unembed_DxV"], preferred_element_type=jnp.float32)
    return jnp.einsum("...d,vd->...v", h, head["unembed_VxD"], preferred_element_type=jnp.float32)


def decode_layout(prefix_kv: KV, dtype) -> list:
    """Per-layer prompt keys k_BxJxKxP and values v_BxJxPxK in `dtype`, from k_LxBxPxJxK and v_LxBxPxJxK.

    These are the layouts XLA's batched matmul reads without transposing
    (batch dims first, keys with the contracted head dim before the slots):
    stored as the prefill returns them, every decode step re-transposed every
    layer's prompt keys and values, which cost more than the step's matmuls.
    """
    k, v = prefix_kv.k.astype(dtype), prefix_kv.v.astype(dtype)
    return [KV(k[i].transpose(0, 2, 3, 1), v[i].transpose(0, 2, 1, 3)) for i in range(k.shape[0])]


def empty_decode_cache(cfg: ModelConfig, b: int, g: int, s: int, dtype) -> list:
    """Per-layer branch cache, branches flattened: k_RxJxKxS, v_RxJxSxK with R = B*G, in `storage_dtype`.

    Flat rows rather than [B, G]: with G = 1 XLA dropped the unit axis with a
    fused bitcast that duplicated the cache update and copied every layer's
    cache four times per step.
    """
    j, k, dt = cfg.num_kv_heads, cfg.head_dim, storage_dtype(dtype)
    return [KV(jnp.zeros((b * g, j, k, s), dt), jnp.zeros((b * g, j, s, k), dt)) for _ in range(cfg.num_layers)]


def _matmul(x, w, dtype):
    return jnp.einsum("rd,de->re", x.astype(dtype), w, preferred_element_type=jnp.float32)


def _attend(cfg, dtype, b, g, q_RxHxK, prefix, prefix_mask_BxP, cache_k, cache_v, step):
    """Attention of each branch's new token over its prompt (shared by the G branches) and its own cache."""
    j, kd = cfg.num_kv_heads, cfg.head_dim
    qh = cfg.num_heads // j
    q = (q_RxHxK * kd**-0.5).astype(dtype).reshape(b, g, j, qh, kd)
    # The prompt is shared by the G branches: its rows are the G*Q queries of each kv head.
    q_BxJxMxK = q.transpose(0, 2, 1, 3, 4).reshape(b, j, g * qh, kd)
    s_prefix = jnp.einsum("bjmk,bjkp->bjmp", q_BxJxMxK, prefix.k, preferred_element_type=jnp.float32)
    s_prefix = jnp.where(prefix_mask_BxP[:, None, None, :], s_prefix, _MASKED)
    q_RxJxQxK = q.reshape(b * g, j, qh, kd).astype(cache_k.dtype)
    s_cache = jnp.einsum("rjqk,rjks->rjqs", q_RxJxQxK, cache_k, preferred_element_type=jnp.float32)
    s_cache = jnp.where(jnp.arange(s_cache.shape[-1]) <= step, s_cache, _MASKED)
    # One softmax over both parts: a shared max and denominator, no concatenated scores.
    m_prefix = s_prefix.max(-1).reshape(b, j, g, qh).transpose(0, 2, 1, 3).reshape(b * g, j, qh)
    m = jnp.maximum(m_prefix, s_cache.max(-1))  # [R, J, Q]
    m_BxJxM = m.reshape(b, g, j, qh).transpose(0, 2, 1, 3).reshape(b, j, g * qh)
    e_prefix = jnp.exp(s_prefix - m_BxJxM[..., None])
    e_cache = jnp.exp(s_cache - m[..., None])
    o_prefix = jnp.einsum("bjmp,bjpk->bjmk", e_prefix.astype(dtype), prefix.v, preferred_element_type=jnp.float32)
    o_cache = jnp.einsum("rjqs,rjsk->rjqk", e_cache.astype(cache_v.dtype), cache_v, preferred_element_type=jnp.float32)
    den_prefix = e_prefix.sum(-1).reshape(b, j, g, qh).transpose(0, 2, 1, 3).reshape(b * g, j, qh)
    o_prefix = o_prefix.reshape(b, j, g, qh, kd).transpose(0, 2, 1, 3, 4).reshape(b * g, j, qh, kd)
    o = (o_prefix + o_cache) / (den_prefix + e_cache.sum(-1))[..., None]
    return o.reshape(b * g, cfg.num_heads * kd)


def _decode_layer(cfg, dtype, b, g, step, x_RxD, w, cos, sin, prefix, prefix_mask_BxP, cache):
    """One layer for one new token per branch; writes its key/value into the cache, then attends."""
    h, kd = cfg.num_heads, cfg.head_dim
    j = cfg.num_kv_heads
    qkv = _matmul(rms_norm(x_RxD, w["attn_norm"], cfg.rms_norm_eps), w["qkv"], dtype)
    if "qkv_b" in w:
        qkv = qkv + w["qkv_b"]
    q = qkv[:, :h * kd].reshape(-1, h, kd)
    k = qkv[:, h * kd:(h + j) * kd].reshape(-1, j, kd)
    v = qkv[:, (h + j) * kd:].reshape(-1, j, kd)
    if cfg.qk_norm:
        q = rms_norm(q, w["q_norm"], cfg.rms_norm_eps)
        k = rms_norm(k, w["k_norm"], cfg.rms_norm_eps)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    # Rounded to the compute dtype first: the values the training forward attends to.
    k, v = (a.astype(dtype).astype(cache.k.dtype) for a in (k, v))
    cache_k = jax.lax.dynamic_update_slice(cache.k, k[..., None], (0, 0, 0, step))
    cache_v = jax.lax.dynamic_update_slice(cache.v, v[:, :, None], (0, 0, step, 0))
    o = _attend(cfg, dtype, b, g, q, prefix, prefix_mask_BxP, cache_k, cache_v, step)
    x_RxD = x_RxD + _matmul(o, w["o"], dtype)
    gate_up = _matmul(rms_norm(x_RxD, w["mlp_norm"], cfg.rms_norm_eps), w["gate_up"], dtype)
    f = cfg.intermediate_size
    x_RxD = x_RxD + _matmul(jax.nn.silu(gate_up[:, :f]) * gate_up[:, f:], w["down"], dtype)
    return x_RxD, KV(cache_k, cache_v)


def decode_rope(cfg: ModelConfig, prefix_mask_BxP: jax.Array, c: int) -> tuple[jax.Array, jax.Array]:
    """RoPE tables cos, sin [C, B, K/2] of the C decode steps, computed before the loop: inside it,
    fusion re-evaluated cos and sin for every element of q and k in every layer."""
    cos, sin = branch_rope(cfg, prefix_mask_BxP.astype(bool), 0, c)  # [B, 1, C, K/2]
    return cos[:, 0].transpose(1, 0, 2), sin[:, 0].transpose(1, 0, 2)


def branch_decode_step(weights: dict, cfg: ModelConfig, tokens_BxG: jax.Array, prefix: list,
                       prefix_mask_BxP: jax.Array, step: jax.Array, cache: list, rope: tuple[jax.Array, jax.Array],
                       *, dtype=jnp.float32) -> tuple[jax.Array, list]:
    """One decode step of G continuations: hidden states [B*G, D] and the cache with this token written.

    `weights` comes from `decode_weights`, `prefix` from `decode_layout`, the
    cache from `empty_decode_cache`, `rope` from `decode_rope`; the new token
    sits `step` positions after each prompt's last real token and attends over
    the prompt and the cache up to and including `step`.
    """
    b, g = tokens_BxG.shape
    prefix_mask_BxP = prefix_mask_BxP.astype(bool)
    cos, sin = (jnp.broadcast_to(jax.lax.dynamic_index_in_dim(t, step, keepdims=False)[:, None],
                                 (b, g, t.shape[-1])).reshape(b * g, -1) for t in rope)
    x = embed(weights["head"], tokens_BxG.reshape(b * g), jnp.float32)
    new_cache = []
    for w, pkv, kv in zip(weights["layers"], prefix, cache):
        x, kv = _decode_layer(cfg, dtype, b, g, step, x, w, cos, sin, pkv, prefix_mask_BxP, kv)
        new_cache.append(kv)
    return x, new_cache
