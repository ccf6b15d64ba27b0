"""The Llama-family decoder as pure functions over the parameter pytree.

Two entry points share every block:

* `sequence_forward` runs ordinary (left-padded) sequences: the training forward
  and the prompt prefill. It also returns each layer's keys and values.
* `branch_forward` runs G continuations of each prompt (a GRPO group) against
  the prompt's keys/values computed once: the training forward of the
  completions. `rft_jax.model.decode.branch_decode_step` is the same math for
  the sampler's decode loop, so the prompt is run once per group in both
  sampling and training (exact, not an approximation).

Completions longer than `LONG_COMPLETION` tokens attend in blocks of queries
(`_blockwise_attention`), so no [C, C] scores exist in either pass.

Layers are stacked on a leading axis and run with `lax.scan`, so compile time
does not grow with depth; only the decode step runs per-layer lists (see there).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rft_jax.model.attention import KeyPart, attend, query_scale, visible
from rft_jax.model.block import (  # noqa: F401 (re-exported: the layer pieces other paths build on)
    Rope,
    attention_output,
    embed,
    layer_lora,
    layer_rope,
    layer_switches,
    mlp_block,
    qkv_projections,
    rope,
    routed_mlp_block,
)
from rft_jax.model.config import ModelConfig
from rft_jax.model.layers import apply_rope, rms_norm
from rft_jax.model.moe import RouterStats
from rft_jax.model.precision import layer_checkpoint, storage_dtype


class KV(NamedTuple):
    """Keys and values, e.g. k_LxBxTxJxK for a prompt or k_LxBxGxSxJxK for branches."""

    k: jax.Array
    v: jax.Array


def positions_from_mask(mask_BxT: jax.Array) -> jax.Array:
    """Left padding shifts a sequence; its first real token still gets position 0."""
    return jnp.maximum(jnp.cumsum(mask_BxT.astype(jnp.int32), axis=-1) - 1, 0)


def unembed_matrix(params: dict) -> jax.Array:
    """The [D, V] output projection; the transposed embedding when tied."""
    return params["unembed"] if "unembed" in params else params["embed"].T


def logits(params: dict, cfg: ModelConfig, hidden_xD: jax.Array, dtype=jnp.float32) -> jax.Array:
    h = rms_norm(hidden_xD, params["final_norm"], cfg.rms_norm_eps)
    return jnp.einsum("...d,dv->...v", h.astype(dtype), unembed_matrix(params).astype(dtype),
                      preferred_element_type=jnp.float32)


def _sequence_layer(cfg, dtype, lora_scale, x_BxTxD, p, lora, sw, r: Rope, positions_BxT, mask_BxTxT,
                    router_mask=None):
    h = rms_norm(x_BxTxD, p["attn_norm"], cfg.rms_norm_eps)
    q, k, v = qkv_projections(cfg, p, lora, lora_scale, h, dtype)
    cos, sin = layer_rope(r, None if sw is None else sw.local)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    b, t = q.shape[:2]
    j, kd = cfg.num_kv_heads, cfg.head_dim
    q_BxTxJxQxK = (q * query_scale(cfg)).reshape(b, t, j, cfg.num_heads // j, kd)
    seen = mask_BxTxT[:, None, None]  # [B, 1, 1, T, S]
    if sw is not None:
        seen = seen & visible(positions_BxT[:, None, None, :, None], positions_BxT[:, None, None, None, :], sw.window)
    o = attend(q_BxTxJxQxK, [KeyPart(k, v, seen, "btjqk,bsjk->bjqts", "bjqts,bsjk->btjqk")], "btjqk", dtype)
    o = o.reshape(b, t, cfg.num_heads * kd)
    x = x_BxTxD + attention_output(cfg, p, lora, lora_scale, o, dtype).astype(x_BxTxD.dtype)
    y, stats = routed_mlp_block(cfg, p, lora, lora_scale, x, dtype, router_mask)
    return x + y.astype(x.dtype), (_stored_kv(k, v, dtype), stats)


def _stored_kv(k, v, dtype) -> KV:
    """Keys/values as the attention saw them (rounded to the compute dtype), in the storage dtype."""
    return KV(*(a.astype(dtype).astype(storage_dtype(dtype)) for a in (k, v)))


def _checked(cfg: ModelConfig, stats: RouterStats | None) -> RouterStats:
    if stats is None:
        raise ValueError(f"router_mask asks for routing statistics, but {cfg.architecture} has no experts")
    return stats


def sequence_forward(params: dict, cfg: ModelConfig, tokens_BxT: jax.Array, mask_BxT: jax.Array, *,
                     lora: dict | None = None, lora_scale: float = 1.0, dtype=jnp.float32,
                     remat: bool = False, router_mask: jax.Array | None = None) -> tuple:
    """Hidden states [B, T, D] (before the final norm) and per-layer keys/values [L, B, T, J, K].

    `router_mask` [B, T] (mixture-of-experts models): the tokens whose routing to count; the function then
    returns a third value, the per-layer `RouterStats` ([L, E]) the load-balancing loss reads.
    """
    mask_BxT = mask_BxT.astype(bool)
    positions = positions_from_mask(mask_BxT)
    r = rope(positions, cfg)
    t = tokens_BxT.shape[1]
    causal_TxT = jnp.tril(jnp.ones((t, t), bool))
    attn_mask = causal_TxT[None] & mask_BxT[:, None, :]
    x = embed(params, tokens_BxT, jnp.float32, cfg)
    adapters = None if lora is None else lora["layers"]

    def body(x, layer):
        p, lp, sw = layer
        return _sequence_layer(cfg, dtype, lora_scale, x, p, lp, sw, r, positions, attn_mask, router_mask)

    x, (kv, stats) = jax.lax.scan(layer_checkpoint(body, remat), x, (params["layers"], adapters, layer_switches(cfg)))
    return (x, kv) if router_mask is None else (x, kv, _checked(cfg, stats))


LONG_COMPLETION = 1024
"""Completions longer than this attend in blocks of queries (`_blockwise_attention`): the scores of
all C x C pairs are [B, G, H, C, C] float32, for 8 SmolLM2 completions 4.5 GiB a layer at 4k tokens and
72 GiB at 16k. Shorter ones keep the one-block path, whose numbers the blockwise one matches to float32
rounding."""

SCORE_BLOCK_BYTES = 1 << 29
"""float32 scores one query block may hold (512 MiB): sets the block's rows (`attention_query_block`)."""

MIN_QUERY_BLOCK = 16  # fewer rows than this leave the matmuls too thin to be worth the loop


def attention_query_block(b: int, g: int, h: int, p: int, c: int) -> int | None:
    """Query rows per block of the branch attention of B x G completions of C tokens after P prompt slots,
    or None for the one-block path (C <= LONG_COMPLETION).

    The largest power of two, at most LONG_COMPLETION, whose float32 scores against the P + C keys fit
    SCORE_BLOCK_BYTES (and at least MIN_QUERY_BLOCK): a fixed block would make the memory grow with B*G*C.
    """
    if c <= LONG_COMPLETION:
        return None
    rows = max(1, SCORE_BLOCK_BYTES // (4 * b * g * h * (p + c)))
    return max(MIN_QUERY_BLOCK, min(LONG_COMPLETION, 1 << (rows.bit_length() - 1)))


def _attention_block(cfg, dtype, q_BxGxCxJxQxK, k_BxGxSxJxK, v_BxGxSxJxK, prefix_kv, prefix_mask_BxP, q_offset,
                     window=None):
    """Attention of C scaled queries, at branch positions q_offset.., over the prompt and, causally, the S keys
    of their own branch (within `window` tokens, when the layer has one); outputs [B, G, C, J, Q, K].

    The scores stay in the layouts their matmuls produce (`attend` combines the
    two parts' softmaxes): concatenating [prompt | branch] scores and slicing
    the weights back apart copied the largest arrays of the layer several
    times in each pass.
    """
    c, s = q_BxGxCxJxQxK.shape[2], k_BxGxSxJxK.shape[2]
    seen_prefix = prefix_mask_BxP[:, None, None, None, None, :]  # [B, J, G, C, Q, P]
    q_at_C = q_offset + jnp.arange(c)
    seen_own = (q_at_C[:, None] >= jnp.arange(s)[None, :])[:, None, :]  # [C, Q, S]
    if window is not None:
        q_pos_BxC = prefix_mask_BxP.sum(-1).astype(jnp.int32)[:, None] + q_at_C
        k_pos_BxP = positions_from_mask(prefix_mask_BxP)
        seen_prefix = seen_prefix & visible(q_pos_BxC[:, None, None, :, None, None],
                                            k_pos_BxP[:, None, None, None, None, :], window)
        seen_own = seen_own & visible(q_at_C[:, None, None], jnp.arange(s)[None, None, :], window)
    parts = [KeyPart(prefix_kv.k, prefix_kv.v, seen_prefix, "bgcjqk,bpjk->bjgcqp", "bjgcqp,bpjk->bgjcqk"),
             KeyPart(k_BxGxSxJxK, v_BxGxSxJxK, seen_own, "bgcjqk,bgsjk->bgjcqs", "bgjcqs,bgsjk->bgjcqk")]
    return attend(q_BxGxCxJxQxK, parts, "bgjcqk", dtype).transpose(0, 1, 3, 2, 4, 5)


def _query_blocks(x_BxGxCx_, rows: int) -> jax.Array:
    """[N, B, G, rows, ...]: the C axis zero-padded to N whole blocks, blocks first."""
    b, g, c = x_BxGxCx_.shape[:3]
    n = -(-c // rows)
    padded = jnp.pad(x_BxGxCx_, ((0, 0), (0, 0), (0, n * rows - c)) + ((0, 0),) * (x_BxGxCx_.ndim - 3))
    return jnp.moveaxis(padded.reshape(b, g, n, rows, *x_BxGxCx_.shape[3:]), 2, 0)


def _from_query_blocks(x_NxBxGxRx_, c: int) -> jax.Array:
    """The inverse of `_query_blocks`: [B, G, C, ...], padding rows dropped."""
    n, b, g, rows = x_NxBxGxRx_.shape[:4]
    return jnp.moveaxis(x_NxBxGxRx_, 0, 2).reshape(b, g, n * rows, *x_NxBxGxRx_.shape[4:])[:, :, :c]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _blockwise_attention(cfg, dtype, rows: int, q6, k, v, prefix_kv, prefix_mask_BxP, window):
    """`_attention_block` over blocks of `rows` queries in turn, so that only one block's [rows, P + C]
    scores exist at a time, in both passes: the backward pass recomputes each block's scores from the
    saved inputs (a custom VJP, as flash attention does). `jax.checkpoint` on the blocks did not hold: under
    the CPU layer policy (`layer_checkpoint`, which saves every matmul output) the blocks' scores were saved
    all the same, [C, C] again.

    Every block reads all C keys (those after it masked), as the one-block path does; skipping them would
    halve the attention FLOPs but needs per-block key counts, which a `lax.map` cannot vary.
    """
    def one(args):
        i, q_block = args
        return _attention_block(cfg, dtype, q_block, k, v, prefix_kv, prefix_mask_BxP, i * rows, window)

    blocks = _query_blocks(q6, rows)
    return _from_query_blocks(jax.lax.map(one, (jnp.arange(blocks.shape[0]), blocks)), q6.shape[2])


def _blockwise_attention_fwd(cfg, dtype, rows, q6, k, v, prefix_kv, prefix_mask_BxP, window):
    out = _blockwise_attention(cfg, dtype, rows, q6, k, v, prefix_kv, prefix_mask_BxP, window)
    return out, (q6, k, v, prefix_kv, prefix_mask_BxP, window)


def _blockwise_attention_bwd(cfg, dtype, rows, res, g_BxGxCxJxQxK):
    """Block by block: the block's VJP gives its queries' gradient, and its share of the keys' and values'
    gradients, summed over the blocks in float32."""
    q6, k, v, prefix_kv, prefix_mask_BxP, window = res
    kv = (k, v, prefix_kv)

    def body(acc, args):
        i, q_block, g_block = args
        block = lambda q, kv: _attention_block(cfg, dtype, q, *kv, prefix_mask_BxP, i * rows, window)  # noqa: E731
        dq, dkv = jax.vjp(block, q_block, kv)[1](g_block)
        return jax.tree.map(lambda a, d: a + d.astype(jnp.float32), acc, dkv), dq

    zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, jnp.float32), kv)
    q_blocks, g_blocks = _query_blocks(q6, rows), _query_blocks(g_BxGxCxJxQxK, rows)
    dkv, dq_blocks = jax.lax.scan(body, zeros, (jnp.arange(q_blocks.shape[0]), q_blocks, g_blocks))
    dk, dv, dprefix = jax.tree.map(lambda d, a: d.astype(a.dtype), dkv, kv)
    return _from_query_blocks(dq_blocks, q6.shape[2]), dk, dv, dprefix, None, None


_blockwise_attention.defvjp(_blockwise_attention_fwd, _blockwise_attention_bwd)


def _branch_attention(cfg, dtype, q_BxGxCxHxK, k_BxGxCxJxK, v_BxGxCxJxK, prefix_kv, prefix_mask_BxP, window=None):
    """Each continuation token attends over its prompt (shared by the G branches) and, causally, its own
    branch: in one block, or in blocks of queries for long completions (`attention_query_block`)."""
    b, g, c = q_BxGxCxHxK.shape[:3]
    j, kd = cfg.num_kv_heads, cfg.head_dim
    q6 = (q_BxGxCxHxK * query_scale(cfg)).reshape(b, g, c, j, cfg.num_heads // j, kd)
    rows = attention_query_block(b, g, cfg.num_heads, prefix_mask_BxP.shape[-1], c)
    if rows is None:
        o = _attention_block(cfg, dtype, q6, k_BxGxCxJxK, v_BxGxCxJxK, prefix_kv, prefix_mask_BxP, 0, window)
    else:
        o = _blockwise_attention(cfg, dtype, rows, q6, k_BxGxCxJxK, v_BxGxCxJxK, prefix_kv, prefix_mask_BxP,
                                 window)
    return o.reshape(b, g, c, cfg.num_heads * kd)


def _branch_layer(cfg, dtype, lora_scale, x, p, lora, sw, r: Rope, prefix_kv, prefix_mask_BxP, pack=None,
                  router_mask=None):
    """One layer over continuation tokens x [B, G, C, D], or over their packed rows x [N, D] with `pack`
    (projections and MLP on the rows, attention on the [B, G, C] slots)."""
    h = rms_norm(x, p["attn_norm"], cfg.rms_norm_eps)
    q, k, v = qkv_projections(cfg, p, lora, lora_scale, h, dtype)
    cos, sin = layer_rope(r, None if sw is None else sw.local)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    k, v = k.astype(dtype), v.astype(dtype)  # what the cache stores and the decode step attends to
    if pack is not None:  # packed rows [N, ...] -> slots [B, G, C, ...]
        q, k, v = (a[pack.slots_BxGxC] for a in (q, k, v))
    o = _branch_attention(cfg, dtype, q, k, v, prefix_kv, prefix_mask_BxP, None if sw is None else sw.window)
    if pack is not None:
        o = o.reshape(-1, o.shape[-1])[pack.rows_N]
    x = x + attention_output(cfg, p, lora, lora_scale, o, dtype).astype(x.dtype)
    y, stats = routed_mlp_block(cfg, p, lora, lora_scale, x, dtype, router_mask)
    return x + y.astype(x.dtype), (_stored_kv(k, v, dtype), stats)


def branch_positions(prefix_mask_BxP, q_offset, c):
    """Positions [B, 1, C] of C continuation tokens starting `q_offset` after each prompt's last real token."""
    prefix_len_B = prefix_mask_BxP.sum(-1).astype(jnp.int32)
    return prefix_len_B[:, None, None] + q_offset + jnp.arange(c)[None, None, :]


def branch_rope(cfg, prefix_mask_BxP, q_offset, c) -> Rope:
    """RoPE tables of C continuation tokens starting `q_offset` after each prompt's last real token."""
    return rope(branch_positions(prefix_mask_BxP, q_offset, c), cfg)


def branch_forward(params: dict, cfg: ModelConfig, tokens_BxGxC: jax.Array, prefix_kv: KV,
                   prefix_mask_BxP: jax.Array, *, lora: dict | None = None, lora_scale: float = 1.0, dtype=jnp.float32,
                   remat: bool = False, prefix_rows_B: jax.Array | None = None,
                   router_mask: jax.Array | None = None) -> tuple:
    """Hidden states [B, G, C, D] of G continuations of each prompt, and their keys/values [L, B, G, C, J, K].

    prefix_rows_B: continuation b reads prompt prefix_rows_B[b] of `prefix_kv` (prefix_mask_BxP is already
    per continuation). Gathered layer by layer: gathering the whole [L, ...] stack up front took 0.1 s a
    copy on a CPU, 0.4 s of a training step. `router_mask` [B, G, C]: as in `sequence_forward`.
    """
    prefix_mask_BxP = prefix_mask_BxP.astype(bool)
    r = branch_rope(cfg, prefix_mask_BxP, 0, tokens_BxGxC.shape[2])
    x = embed(params, tokens_BxGxC, jnp.float32, cfg)
    adapters = None if lora is None else lora["layers"]

    def body(x, layer):
        p, lp, sw, pkv = layer
        if prefix_rows_B is not None:
            pkv = KV(pkv.k[prefix_rows_B], pkv.v[prefix_rows_B])
        return _branch_layer(cfg, dtype, lora_scale, x, p, lp, sw, r, pkv, prefix_mask_BxP, router_mask=router_mask)

    xs = (params["layers"], adapters, layer_switches(cfg), prefix_kv)
    x, (kv, stats) = jax.lax.scan(layer_checkpoint(body, remat), x, xs)
    return (x, kv) if router_mask is None else (x, kv, _checked(cfg, stats))


class Packing(NamedTuple):
    """Where the real tokens of a padded [B, G, C] batch sit when packed into N rows.

    rows_N: flat index of each packed row's token (the real tokens in order, then
    repeats of flat slot 0 up to N); slots_BxGxC: the packed row holding each
    slot's token (a padding slot points at an earlier real token, never read).
    """

    rows_N: jax.Array
    slots_BxGxC: jax.Array


def packing(mask_BxGxC: jax.Array, n: int) -> Packing:
    """The packing of the real tokens into `n` rows (n must be at least their number)."""
    flat = mask_BxGxC.reshape(-1).astype(bool)
    rows = jnp.nonzero(flat, size=n, fill_value=0)[0]
    slots = jnp.maximum(jnp.cumsum(flat.astype(jnp.int32)) - 1, 0)
    return Packing(rows, slots.reshape(mask_BxGxC.shape))


def packed_branch_forward(params: dict, cfg: ModelConfig, tokens_BxGxC: jax.Array, mask_BxGxC: jax.Array,
                          prefix_kv: KV, prefix_mask_BxP: jax.Array, *, rows: int, lora: dict | None = None,
                          lora_scale: float = 1.0, dtype=jnp.float32) -> tuple[jax.Array, KV, Packing]:
    """`branch_forward` for right-padded continuations whose padding would be most of the work.

    The projections and the MLP, nearly all of the FLOPs, run on `rows` packed
    rows (the real tokens, see `packing`); only attention runs on the padded
    [B, G, C] layout. A prefill of prompts of 55-81 tokens padded to 96 spent a
    third of its matmuls on padding. Returns the packed hidden states [rows, D],
    the keys/values in the padded layout [L, B, G, C, J, K] (padding slots hold
    copies of real ones; mask them), and the packing.
    """
    prefix_mask_BxP = prefix_mask_BxP.astype(bool)
    pack = packing(mask_BxGxC, rows)
    positions = branch_positions(prefix_mask_BxP, 0, tokens_BxGxC.shape[2])
    positions_N = jnp.broadcast_to(positions, tokens_BxGxC.shape).reshape(-1)[pack.rows_N]
    r = rope(positions_N, cfg)
    x = embed(params, tokens_BxGxC.reshape(-1)[pack.rows_N], jnp.float32, cfg)
    adapters = None if lora is None else lora["layers"]

    def body(x, layer):
        p, lp, sw, pkv = layer
        return _branch_layer(cfg, dtype, lora_scale, x, p, lp, sw, r, pkv, prefix_mask_BxP, pack)

    x, (kv, _) = jax.lax.scan(body, x, (params["layers"], adapters, layer_switches(cfg), prefix_kv))
    return x, kv, pack
