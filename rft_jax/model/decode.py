"""One decode step of G continuations per prompt, arranged for the sampler's loop.

The math is `branch_forward`'s with a cache; what differs is the arrangement,
each choice measured in the compiled decode loop on a CPU:

* Per-layer lists rather than a `lax.scan` over stacked arrays: a scan slices,
  that is copies, every layer's weights and cache on every step.
* `decode_weights` fuses q|k|v and gate|up (a mixture of experts: its MLP is
  `block.mlp_block` itself, unfused) into one matmul each, and their
  adapters into one pair each (A side by side, B block-diagonal): fourteen
  adapter matmuls a layer become eight. The adapters stay separate rather than
  merged into the weights, so a token's log-prob is computed as the training
  forward computes it: merged into bf16 weights, an adapter update smaller than
  the weights' rounding step vanished from the sampler but not from training.
* Prompt keys/values in the layouts a batched matmul reads without transposing
  (`decode_layout`), and the unembedding in its stored layout.
* The branch cache is in `storage_dtype`, float32 on a CPU: XLA's CPU backend
  has no bf16 dynamic-update-slice, and writing one token into a bf16 cache
  converted the whole cache to f32 and back on every step (15 ms a step at 64
  cached tokens, 80 ms at 512), while an f32 cache is written in place.
* Attention combines the prompt part and the cache part as two partial
  softmaxes (`attention.attend`: shared max and denominator) instead of
  concatenating scores.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rft_jax.model.attention import KeyPart, attend, layer_windows, query_scale, visible
from rft_jax.model.block import (
    Rope,
    activation,
    embed,
    layer_rope,
    local_rope_layers,
    mlp_block,
    split_heads,
    sublayer_output,
)
from rft_jax.model.config import ModelConfig
from rft_jax.model.layers import apply_rope, lora_delta, rms_norm
from rft_jax.model.precision import concat_bits, storage_dtype
from rft_jax.model.transformer import KV, branch_rope, positions_from_mask

_GROUPS = {"qkv": ("q", "k", "v"), "o": ("o",), "gate_up": ("gate", "up"), "down": ("down",)}


def _groups(cfg: ModelConfig) -> dict[str, tuple[str, ...]]:
    """The fused projections: a mixture of experts keeps its router and experts as they are (`mlp_block`)."""
    return {k: v for k, v in _GROUPS.items() if k in ("qkv", "o")} if cfg.num_experts else _GROUPS


def _group_adapter(layers: dict, lora: dict, names: tuple[str, ...], dtype) -> dict | None:
    """One adapter pair for projections that share an input: A_LxDx(nR) side by side, B_Lx(nR)xE block-diagonal.

    x @ A @ B then equals each projection's own (x @ A_n) @ B_n next to the
    others, the off-diagonal zeros adding exact zeros. A member without an
    adapter gets zero columns. None when no member has one.
    """
    present = [n for n in names if n in lora["layers"]]
    if not present:
        return None
    outs = [layers[n]["w"].shape[-1] for n in names]
    a = concat_bits([lora["layers"][n]["a"].astype(dtype) for n in present], -1)
    ranks = [lora["layers"][n]["b"].shape[1] for n in present]
    b = jnp.zeros((a.shape[0], sum(ranks), sum(outs)), dtype)
    row = 0
    for n, r in zip(present, ranks):
        col = sum(outs[:names.index(n)])
        b = jax.lax.dynamic_update_slice(b, lora["layers"][n]["b"].astype(dtype), (0, row, col))
        row += r
    return {"a": a, "b": b}


def decode_weights(params: dict, cfg: ModelConfig, lora: dict | None, dtype) -> dict:
    """Per-layer decode weights (q|k|v and gate|up fused, with their adapters beside them) and the output head."""
    stacked = params["layers"]
    fused = {group: concat_bits([stacked[n]["w"].astype(dtype) for n in names], -1)
             for group, names in _groups(cfg).items()}
    if lora is not None:
        for group, names in _groups(cfg).items():
            adapter = _group_adapter(stacked, lora, names, dtype)
            if adapter is not None:
                fused[f"{group}_lora_a"], fused[f"{group}_lora_b"] = adapter["a"], adapter["b"]
    if cfg.qkv_bias:
        fused["qkv_bias"] = jnp.concatenate([stacked[n]["b"].astype(jnp.float32) for n in ("q", "k", "v")], -1)
    for name in ("attn_norm", "mlp_norm", "q_norm", "k_norm", "attn_post_norm", "mlp_post_norm"):
        if name in stacked:
            fused[name] = stacked[name]
    if cfg.num_experts:  # cast once here, not on every step (the forward casts them to `dtype` the same way)
        fused["router"], fused["experts"] = jax.tree.map(lambda a: a.astype(dtype), (stacked["router"],
                                                                                    stacked["experts"]))
    layers = [jax.tree.map(lambda a, i=i: a[i], fused) for i in range(cfg.num_layers)]
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


def _project(x_RxD, w: dict, group: str, dtype, lora_scale: float):
    """x @ W (+ the adapter's `lora_delta`, the training forward's own function), matmuls in `dtype` with float32
    results, as `layers.dense` computes it."""
    x = x_RxD.astype(dtype)
    y = jnp.einsum("rd,de->re", x, w[group], preferred_element_type=jnp.float32)
    if f"{group}_lora_a" in w:
        y = y + lora_delta(x, w[f"{group}_lora_a"], w[f"{group}_lora_b"], lora_scale, jnp.dtype(dtype))
    return y


def _attend(cfg, dtype, b, g, q_RxHxK, prefix, prefix_mask_BxP, cache_k, cache_v, step, valid_RxS=None,
            window: int = 0, q_offset_R=None):
    """Attention of each branch's new token over its prompt (shared by the G branches) and its own cache:
    slots up to `step`, or the slots `valid_RxS` marks (multi-turn decoding, where rows idle at times);
    within `window` tokens on a sliding-window layer, the token `q_offset_R` after its prompt."""
    j, kd = cfg.num_kv_heads, cfg.head_dim
    qh = cfg.num_heads // j
    q = (q_RxHxK * query_scale(cfg)).reshape(b, g, j, qh, kd)
    s = cache_k.shape[-1]
    # The prompt is shared by the G branches: its rows are the G*Q queries of each kv head.
    seen_prefix = prefix_mask_BxP[:, None, None, None, :]  # [B, J, G, Q, P]
    seen_cache = jnp.arange(s) <= step if valid_RxS is None else valid_RxS.reshape(b, g, 1, 1, s)
    if window:
        slot_at = jnp.arange(s) if valid_RxS is None else jnp.cumsum(valid_RxS, -1) - 1  # [S] or [R, S]
        q_at_R = q_offset_R.reshape(-1)
        q_pos_BxG = (prefix_mask_BxP.sum(-1).astype(jnp.int32)[:, None] + q_at_R.reshape(b, -1))
        seen_prefix = seen_prefix & visible(q_pos_BxG[:, None, :, None, None],
                                            positions_from_mask(prefix_mask_BxP)[:, None, None, None, :], window)
        near = visible(q_at_R[:, None], slot_at, window)  # [R, S]
        seen_cache = seen_cache & near.reshape(b, g, 1, 1, s)
    parts = [KeyPart(prefix.k, prefix.v, seen_prefix, "bgjqk,bjkp->bjgqp", "bjgqp,bjpk->bjgqk"),
             KeyPart(cache_k.reshape(b, g, j, kd, s), cache_v.reshape(b, g, j, s, kd), seen_cache,
                     "bgjqk,bgjks->bgjqs", "bgjqs,bgjsk->bgjqk")]
    return attend(q, parts, "bgjqk", dtype).reshape(b * g, cfg.num_heads * kd)


def _decode_layer(cfg, dtype, lora_scale, b, g, step, x_RxD, w, cos, sin, prefix, prefix_mask_BxP, cache,
                  valid_RxS=None, window: int = 0, q_offset_R=None):
    """One layer for one new token per branch; writes its key/value into the cache, then attends."""
    h, kd = cfg.num_heads, cfg.head_dim
    j = cfg.num_kv_heads
    qkv = _project(rms_norm(x_RxD, w["attn_norm"], cfg.rms_norm_eps), w, "qkv", dtype, lora_scale)
    if "qkv_bias" in w:
        qkv = qkv + w["qkv_bias"]
    q, k, v = split_heads(cfg, w, qkv[:, :h * kd], qkv[:, h * kd:(h + j) * kd], qkv[:, (h + j) * kd:])
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    # Rounded to the compute dtype first: the values the training forward attends to.
    k, v = (a.astype(dtype).astype(cache.k.dtype) for a in (k, v))
    cache_k = jax.lax.dynamic_update_slice(cache.k, k[..., None], (0, 0, 0, step))
    cache_v = jax.lax.dynamic_update_slice(cache.v, v[:, :, None], (0, 0, step, 0))
    o = _attend(cfg, dtype, b, g, q, prefix, prefix_mask_BxP, cache_k, cache_v, step, valid_RxS, window, q_offset_R)
    x_RxD = x_RxD + sublayer_output(cfg, w, "attn_post_norm", _project(o, w, "o", dtype, lora_scale))
    if cfg.num_experts:  # the forward's own MoE MLP, on the decode rows
        return x_RxD + mlp_block(cfg, w, None, lora_scale, x_RxD, dtype), KV(cache_k, cache_v)
    gate_up = _project(rms_norm(x_RxD, w["mlp_norm"], cfg.rms_norm_eps), w, "gate_up", dtype, lora_scale)
    f = cfg.intermediate_size
    y = _project(activation(cfg, gate_up[:, :f]) * gate_up[:, f:], w, "down", dtype, lora_scale)
    x_RxD = x_RxD + sublayer_output(cfg, w, "mlp_post_norm", y)
    return x_RxD, KV(cache_k, cache_v)


def decode_rope(cfg: ModelConfig, prefix_mask_BxP: jax.Array, c: int) -> Rope:
    """RoPE tables cos, sin [C, B, K/2] of the C decode steps, computed before the loop: inside it,
    fusion re-evaluated cos and sin for every element of q and k in every layer."""
    r = branch_rope(cfg, prefix_mask_BxP.astype(bool), 0, c)  # [B, 1, C, K/2]
    to_steps = lambda t: t[:, 0].transpose(1, 0, 2)  # noqa: E731
    return Rope(to_steps(r.cos), to_steps(r.sin), None if r.local is None else tuple(map(to_steps, r.local)))


def branch_decode_step(weights: dict, cfg: ModelConfig, tokens_BxG: jax.Array, prefix: list,
                       prefix_mask_BxP: jax.Array, step: jax.Array, cache: list, rope: tuple[jax.Array, jax.Array],
                       *, dtype=jnp.float32, lora_scale: float = 1.0, positions_BxG: jax.Array | None = None,
                       valid_RxS: jax.Array | None = None) -> tuple[jax.Array, list]:
    """One decode step of G continuations: hidden states [B*G, D] and the cache with this token written.

    `weights` comes from `decode_weights`, `prefix` from `decode_layout`, the
    cache from `empty_decode_cache`, `rope` from `decode_rope`; the new token
    is written into cache slot `step`, sits `step` positions after each
    prompt's last real token and attends over the prompt and the cache up to
    and including `step`. Multi-turn decoding (`rft_jax.sampling.turns`), where
    a row may idle while others decode, gives each row's position
    (`positions_BxG`, its tokens so far) and the slots it attends to
    (`valid_RxS`, this step's slot included) instead.
    """
    b, g = tokens_BxG.shape
    prefix_mask_BxP = prefix_mask_BxP.astype(bool)
    if positions_BxG is None:
        read = lambda t: jnp.broadcast_to(jax.lax.dynamic_index_in_dim(t, step, keepdims=False)[:, None],  # noqa: E731
                                          (b, g, t.shape[-1])).reshape(b * g, -1)
        q_offset_R = jnp.broadcast_to(step, (b * g,))
    else:  # the table [C, B, K/2] read at each row's own position
        read = lambda t: t[positions_BxG, jnp.arange(b)[:, None]].reshape(b * g, -1)  # noqa: E731
        q_offset_R = positions_BxG.reshape(-1)
    tables = Rope(read(rope.cos), read(rope.sin), None if rope.local is None else tuple(map(read, rope.local)))
    x = embed(weights["head"], tokens_BxG.reshape(b * g), jnp.float32, cfg)
    new_cache = []
    layers = zip(weights["layers"], prefix, cache, layer_windows(cfg), local_rope_layers(cfg))
    for w, pkv, kv, window, local in layers:
        cos, sin = layer_rope(tables, local)
        x, kv = _decode_layer(cfg, dtype, lora_scale, b, g, step, x, w, cos, sin, pkv, prefix_mask_BxP, kv,
                              valid_RxS, window, q_offset_R)
        new_cache.append(kv)
    return x, new_cache
