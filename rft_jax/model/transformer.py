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

from rft_jax.model.config import ModelConfig
from rft_jax.model.layers import apply_rope, dense, rms_norm, rope_tables
from rft_jax.model.precision import layer_checkpoint, mixed_einsum, storage_dtype

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
    """Attention weights with masked keys excluded (a finite fill, so fully masked rows stay NaN-free).

    The mask enters as an additive bias, whose gradient needs nothing saved: with
    `where`, autodiff kept every layer's mask broadcast to the full score shape.
    """
    return jax.nn.softmax(scores + jnp.where(mask, 0.0, _MASKED), axis=-1)


def _sequence_layer(cfg, dtype, lora_scale, x_BxTxD, p, lora, cos, sin, mask_BxTxT):
    h = rms_norm(x_BxTxD, p["attn_norm"], cfg.rms_norm_eps)
    q, k, v = qkv_projections(cfg, p, lora, lora_scale, h, dtype)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    b, t = q.shape[:2]
    j, kd = cfg.num_kv_heads, cfg.head_dim
    q_BxTxJxQxK = q.reshape(b, t, j, cfg.num_heads // j, kd)
    s = mixed_einsum("btjqk,bsjk->bjqts", q_BxTxJxQxK, k, dtype) * kd**-0.5
    w = masked_softmax(s, mask_BxTxT[:, None, None])
    o = mixed_einsum("bjqts,bsjk->btjqk", w, v, dtype)
    o = o.reshape(b, t, cfg.num_heads * kd)
    x = x_BxTxD + dense(o, p["o"], layer_lora(lora, "o"), lora_scale, dtype).astype(x_BxTxD.dtype)
    x = x + mlp_block(cfg, p, lora, lora_scale, x, dtype).astype(x.dtype)
    return x, _stored_kv(k, v, dtype)


def _stored_kv(k, v, dtype) -> KV:
    """Keys/values as the attention saw them (rounded to the compute dtype), in the storage dtype."""
    return KV(*(a.astype(dtype).astype(storage_dtype(dtype)) for a in (k, v)))


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

    x, kv = jax.lax.scan(layer_checkpoint(body, remat), x, (params["layers"], layer_lora))
    return x, kv


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


def _attention_block(cfg, dtype, q_BxGxCxJxQxK, k_BxGxSxJxK, v_BxGxSxJxK, prefix_kv, prefix_mask_BxP, q_offset):
    """Attention of C scaled queries, at branch positions q_offset.., over the prompt and, causally, the S keys
    of their own branch; outputs [B, G, C, J, Q, K].

    One softmax over both parts as two partial ones (a shared max, summed
    denominators), with the scores kept in the layouts their matmuls produce:
    concatenating [prompt | branch] scores and slicing the weights back apart
    copied the largest arrays of the layer several times in each pass.
    """
    c, s = q_BxGxCxJxQxK.shape[2], k_BxGxSxJxK.shape[2]
    s_prefix = mixed_einsum("bgcjqk,bpjk->bjgcqp", q_BxGxCxJxQxK, prefix_kv.k, dtype)
    s_prefix = s_prefix + jnp.where(prefix_mask_BxP, 0.0, _MASKED)[:, None, None, None, None, :]
    s_own = mixed_einsum("bgcjqk,bgsjk->bgjcqs", q_BxGxCxJxQxK, k_BxGxSxJxK, dtype)
    causal_CxS = (q_offset + jnp.arange(c))[:, None] >= jnp.arange(s)[None, :]
    s_own = s_own + jnp.where(causal_CxS, 0.0, _MASKED)[:, None, :]
    # The max only shifts the exponent (the softmax does not depend on it), so no gradient flows through it.
    m_own = jnp.maximum(s_prefix.max(-1).transpose(0, 2, 1, 3, 4), s_own.max(-1))  # [B, G, J, C, Q]
    m_own = jax.lax.stop_gradient(m_own)
    e_prefix = jnp.exp(s_prefix - m_own.transpose(0, 2, 1, 3, 4)[..., None])
    e_own = jnp.exp(s_own - m_own[..., None])
    denominator = e_prefix.sum(-1).transpose(0, 2, 1, 3, 4) + e_own.sum(-1)  # [B, G, J, C, Q]
    o_prefix = mixed_einsum("bjgcqp,bpjk->bgjcqk", e_prefix, prefix_kv.v, dtype)
    o_own = mixed_einsum("bgjcqs,bgsjk->bgjcqk", e_own, v_BxGxSxJxK, dtype)
    o = (o_prefix + o_own) / denominator[..., None]  # [B, G, J, C, Q, K]
    return o.transpose(0, 1, 3, 2, 4, 5)


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
def _blockwise_attention(cfg, dtype, rows: int, q6, k, v, prefix_kv, prefix_mask_BxP):
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
        return _attention_block(cfg, dtype, q_block, k, v, prefix_kv, prefix_mask_BxP, i * rows)

    blocks = _query_blocks(q6, rows)
    return _from_query_blocks(jax.lax.map(one, (jnp.arange(blocks.shape[0]), blocks)), q6.shape[2])


def _blockwise_attention_fwd(cfg, dtype, rows, q6, k, v, prefix_kv, prefix_mask_BxP):
    out = _blockwise_attention(cfg, dtype, rows, q6, k, v, prefix_kv, prefix_mask_BxP)
    return out, (q6, k, v, prefix_kv, prefix_mask_BxP)


def _blockwise_attention_bwd(cfg, dtype, rows, res, g_BxGxCxJxQxK):
    """Block by block: the block's VJP gives its queries' gradient, and its share of the keys' and values'
    gradients, summed over the blocks in float32."""
    q6, k, v, prefix_kv, prefix_mask_BxP = res
    kv = (k, v, prefix_kv)

    def body(acc, args):
        i, q_block, g_block = args
        attend = lambda q, kv: _attention_block(cfg, dtype, q, *kv, prefix_mask_BxP, i * rows)  # noqa: E731
        dq, dkv = jax.vjp(attend, q_block, kv)[1](g_block)
        return jax.tree.map(lambda a, d: a + d.astype(jnp.float32), acc, dkv), dq

    zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, jnp.float32), kv)
    q_blocks, g_blocks = _query_blocks(q6, rows), _query_blocks(g_BxGxCxJxQxK, rows)
    dkv, dq_blocks = jax.lax.scan(body, zeros, (jnp.arange(q_blocks.shape[0]), q_blocks, g_blocks))
    dk, dv, dprefix = jax.tree.map(lambda d, a: d.astype(a.dtype), dkv, kv)
    return _from_query_blocks(dq_blocks, q6.shape[2]), dk, dv, dprefix, None


_blockwise_attention.defvjp(_blockwise_attention_fwd, _blockwise_attention_bwd)


def _branch_attention(cfg, dtype, q_BxGxCxHxK, k_BxGxCxJxK, v_BxGxCxJxK, prefix_kv, prefix_mask_BxP):
    """Each continuation token attends over its prompt (shared by the G branches) and, causally, its own
    branch: in one block, or in blocks of queries for long completions (`attention_query_block`)."""
    b, g, c = q_BxGxCxHxK.shape[:3]
    j, kd = cfg.num_kv_heads, cfg.head_dim
    q6 = q_BxGxCxHxK.reshape(b, g, c, j, cfg.num_heads // j, kd) * kd**-0.5
    rows = attention_query_block(b, g, cfg.num_heads, prefix_mask_BxP.shape[-1], c)
    if rows is None:
        o = _attention_block(cfg, dtype, q6, k_BxGxCxJxK, v_BxGxCxJxK, prefix_kv, prefix_mask_BxP, 0)
    else:
        o = _blockwise_attention(cfg, dtype, rows, q6, k_BxGxCxJxK, v_BxGxCxJxK, prefix_kv, prefix_mask_BxP)
    return o.reshape(b, g, c, cfg.num_heads * kd)


def _branch_layer(cfg, dtype, lora_scale, x, p, lora, cos, sin, prefix_kv, prefix_mask_BxP, pack=None):
    """One layer over continuation tokens x [B, G, C, D], or over their packed rows x [N, D] with `pack`
    (projections and MLP on the rows, attention on the [B, G, C] slots)."""
    h = rms_norm(x, p["attn_norm"], cfg.rms_norm_eps)
    q, k, v = qkv_projections(cfg, p, lora, lora_scale, h, dtype)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    k, v = k.astype(dtype), v.astype(dtype)  # what the cache stores and the decode step attends to
    if pack is not None:  # packed rows [N, ...] -> slots [B, G, C, ...]
        q, k, v = (a[pack.slots_BxGxC] for a in (q, k, v))
    o = _branch_attention(cfg, dtype, q, k, v, prefix_kv, prefix_mask_BxP)
    if pack is not None:
        o = o.reshape(-1, o.shape[-1])[pack.rows_N]
    x = x + dense(o, p["o"], layer_lora(lora, "o"), lora_scale, dtype).astype(x.dtype)
    x = x + mlp_block(cfg, p, lora, lora_scale, x, dtype).astype(x.dtype)
    return x, _stored_kv(k, v, dtype)


def branch_positions(prefix_mask_BxP, q_offset, c):
    """Positions [B, 1, C] of C continuation tokens starting `q_offset` after each prompt's last real token."""
    prefix_len_B = prefix_mask_BxP.sum(-1).astype(jnp.int32)
    return prefix_len_B[:, None, None] + q_offset + jnp.arange(c)[None, None, :]


def branch_rope(cfg, prefix_mask_BxP, q_offset, c):
    """RoPE tables of C continuation tokens starting `q_offset` after each prompt's last real token."""
    return rope_tables(branch_positions(prefix_mask_BxP, q_offset, c), cfg)


def branch_forward(params: dict, cfg: ModelConfig, tokens_BxGxC: jax.Array, prefix_kv: KV,
                   prefix_mask_BxP: jax.Array, *, lora: dict | None = None, lora_scale: float = 1.0, dtype=jnp.float32,
                   remat: bool = False, prefix_rows_B: jax.Array | None = None) -> tuple[jax.Array, KV]:
    """Hidden states [B, G, C, D] of G continuations of each prompt, and their keys/values [L, B, G, C, J, K].

    prefix_rows_B: continuation b reads prompt prefix_rows_B[b] of `prefix_kv` (prefix_mask_BxP is already
    per continuation). Gathered layer by layer: gathering the whole [L, ...] stack up front took 0.1 s a
    copy on a CPU, 0.4 s of a training step.
    """
    prefix_mask_BxP = prefix_mask_BxP.astype(bool)
    cos, sin = branch_rope(cfg, prefix_mask_BxP, 0, tokens_BxGxC.shape[2])
    x = embed(params, tokens_BxGxC, jnp.float32)
    layer_lora = None if lora is None else lora["layers"]

    def body(x, layer):
        p, lp, pkv = layer
        if prefix_rows_B is not None:
            pkv = KV(pkv.k[prefix_rows_B], pkv.v[prefix_rows_B])
        return _branch_layer(cfg, dtype, lora_scale, x, p, lp, cos, sin, pkv, prefix_mask_BxP)

    return jax.lax.scan(layer_checkpoint(body, remat), x, (params["layers"], layer_lora, prefix_kv))


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
    cos, sin = rope_tables(positions_N, cfg)
    x = embed(params, tokens_BxGxC.reshape(-1)[pack.rows_N], jnp.float32)
    layer_lora = None if lora is None else lora["layers"]

    def body(x, layer):
        p, lp, pkv = layer
        return _branch_layer(cfg, dtype, lora_scale, x, p, lp, cos, sin, pkv, prefix_mask_BxP, pack)

    x, kv = jax.lax.scan(body, x, (params["layers"], layer_lora, prefix_kv))
    return x, kv, pack
