"""The server's two jitted steps over a slot KV cache: prefill into slots, decode every slot once.

The cache holds one row per slot, k_LxSxTxJxK, and each slot is at its own
position: a request that joins mid-flight sits next to one that is 500 tokens
in. `branch_decode_step` shares one step index across its batch, so the decode step
here is a per-slot variant of it, built from the same layer pieces (`rft_jax.model.block`) and
attention function (`rft_jax.model.attention.attend`) so the numerics are the model's own.

Shapes are static for jit: the prompt bucket P, the number of leading slots
decoded (`rows`, a power of two covering the highest busy slot) and the
attention `window` (a bucket covering the longest busy slot). A short, lightly
loaded server therefore does not pay for reading the whole cache every step.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rft_jax.model.attention import KeyPart, attend, query_scale, visible
from rft_jax.model.block import (
    attention_output,
    embed,
    layer_rope,
    layer_switches,
    mlp_block,
    qkv_projections,
    rope,
)
from rft_jax.model.config import ModelConfig
from rft_jax.model.layers import apply_rope, rms_norm

# The model's layer pieces, reused so a decode step computes exactly what a forward does.
from rft_jax.model.transformer import KV, logits, sequence_forward
from rft_jax.serving.slot_sampling import slot_draw, step_keys


def empty_cache(cfg: ModelConfig, slots: int, max_context: int, dtype) -> KV:
    shape = (cfg.num_layers, slots, max_context, cfg.num_kv_heads, cfg.head_dim)
    return KV(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


@functools.partial(jax.jit, static_argnames=("cfg", "lora_scale", "dtype"), donate_argnames=("cache",))
def prefill_slots(params: dict, cfg: ModelConfig, cache: KV, tokens_BxP: jax.Array, lengths_B: jax.Array,
                  slots_B: jax.Array, seeds_Bx2: jax.Array, temperature_B: jax.Array, top_p_B: jax.Array, *,
                  lora: dict | None = None, lora_scale: float = 1.0, dtype=jnp.float32) -> tuple[KV, jax.Array]:
    """Runs right-padded prompts, writes their keys/values into cache rows `slots_B` (rows equal to the
    slot count are padding and dropped) and returns each prompt's first sampled token."""
    b, p = tokens_BxP.shape
    mask_BxP = jnp.arange(p)[None, :] < lengths_B[:, None]
    # Right padding: real tokens get positions 0..n-1 and never attend to the pads after them.
    hidden, kv = sequence_forward(params, cfg, tokens_BxP, mask_BxP, lora=lora, lora_scale=lora_scale, dtype=dtype)
    last_BxD = hidden[jnp.arange(b), lengths_B - 1]
    first = slot_draw(step_keys(seeds_Bx2, lengths_B), logits(params, cfg, last_BxD, dtype), temperature_B, top_p_B)
    cache = KV(*(full.at[:, slots_B, :p].set(new.astype(full.dtype), mode="drop") for full, new in zip(cache, kv)))
    return cache, first


def _decode_layer(cfg, dtype, lora_scale, positions_S, r, x_SxD, p, lora, sw, k_SxWxJxK, v_SxWxJxK):
    h = rms_norm(x_SxD, p["attn_norm"], cfg.rms_norm_eps)
    q, k, v = qkv_projections(cfg, p, lora, lora_scale, h, dtype)  # q [S, H, K], k/v [S, J, K]
    cos, sin = layer_rope(r, None if sw is None else sw.local)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    s, w = x_SxD.shape[0], k_SxWxJxK.shape[1]
    j, kd = cfg.num_kv_heads, cfg.head_dim
    q4 = (q * query_scale(cfg)).reshape(s, j, cfg.num_heads // j, kd)
    k, v = k.astype(dtype), v.astype(dtype)
    # Keys: this slot's cached tokens before its position, then the token itself.
    seen_cache = (jnp.arange(w)[None, :] < positions_S[:, None])[:, None, None, :]  # [S, 1, 1, W]
    if sw is not None:
        seen_cache = seen_cache & visible(positions_S[:, None, None, None], jnp.arange(w), sw.window)
    parts = [KeyPart(k_SxWxJxK, v_SxWxJxK, seen_cache, "sjqk,stjk->sjqt", "sjqt,stjk->sjqk"),
             KeyPart(k[:, None], v[:, None], jnp.ones((1,), bool), "sjqk,stjk->sjqt", "sjqt,stjk->sjqk")]
    o = attend(q4, parts, "sjqk", dtype).reshape(s, cfg.num_heads * kd)
    x = x_SxD + attention_output(cfg, p, lora, lora_scale, o, dtype).astype(x_SxD.dtype)
    x = x + mlp_block(cfg, p, lora, lora_scale, x, dtype).astype(x.dtype)
    return x, KV(k, v)


@functools.partial(jax.jit, static_argnames=("cfg", "window", "lora_scale", "dtype"), donate_argnames=("cache",))
def decode_slots(params: dict, cfg: ModelConfig, cache: KV, tokens_S: jax.Array, positions_S: jax.Array,
                 seeds_Sx2: jax.Array, temperature_S: jax.Array, top_p_S: jax.Array, *, window: int,
                 lora: dict | None = None, lora_scale: float = 1.0, dtype=jnp.float32) -> tuple[KV, jax.Array]:
    """One decode step of the first S slots: token `tokens_S[s]` sits at `positions_S[s]`; its keys/values
    are written there and the token for the next position is sampled. Needs positions_S <= window."""
    s = tokens_S.shape[0]
    r = rope(positions_S, cfg)
    x = embed(params, tokens_S, jnp.float32, cfg)
    adapters = None if lora is None else lora["layers"]

    def body(x, layer):
        p, lp, sw, kc, vc = layer
        return _decode_layer(cfg, dtype, lora_scale, positions_S, r, x, p, lp, sw, kc, vc)

    xs = (params["layers"], adapters, layer_switches(cfg), cache.k[:, :s, :window], cache.v[:, :s, :window])
    x, new_kv = jax.lax.scan(body, x, xs)
    rows = jnp.arange(s)
    cache = KV(*(full.at[:, rows, positions_S].set(new.astype(full.dtype)) for full, new in zip(cache, new_kv)))
    nxt = slot_draw(step_keys(seeds_Sx2, positions_S + 1), logits(params, cfg, x, dtype), temperature_S, top_p_S)
    return cache, nxt
