"""Blockwise jnp implementation: the portable fallback and the CPU default.

The vocabulary is walked in blocks of `blocks.vocab` columns with `lax.scan`
(full blocks) plus one static tail block (V % vocab columns), so no [N, V]
array and no padded copy of the unembedding is ever made. The forward pass
keeps online log-sum-exp statistics; the backward pass recomputes each logits
block from (hidden, unembedding) and immediately turns it into the two
gradient matmuls. Peak memory is O(N * vocab + D * V) instead of O(N * V).

The target's logit and the target's one-hot gradient term touch one column
per token, so they are done once by gather / scatter-add on [N, D] rather than
by a compare-and-select over every [N, vocab] tile: on CPU the tile passes,
not the gathers, are what competes with the matmuls.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from kernels.fused_logprob import tile_math
from kernels.fused_logprob.block_sizes import XLA_CHUNKED, BlockSizes
from kernels.layout import rows_last


def _vocab_loop(body, carry, vocab_size: int, block: int):
    """Runs body(carry, start, size) over [0, V) in blocks of `block` columns.

    Full blocks go through one `lax.scan` (dynamic start, static size); the
    remainder is a single extra call with its own static size.
    """
    block = min(block, vocab_size)
    num_full = vocab_size // block
    tail = vocab_size - num_full * block

    def scan_body(c, j):
        return body(c, j * block, block), None

    carry, _ = lax.scan(scan_body, carry, jnp.arange(num_full, dtype=jnp.int32))
    if tail:
        carry = body(carry, num_full * block, tail)
    return carry


def _logits_block(hidden_NxD, unembed_DxV, start, size, temperature):
    """float32 logits of columns [start, start + size), temperature applied, multiplied in the hidden
    states' dtype. The unembedding may be stored wider (float32 on a CPU, where XLA converts a whole
    bf16 array to slice it); each block is cast after slicing."""
    w_DxC = lax.dynamic_slice_in_dim(unembed_DxV, start, size, axis=1).astype(hidden_NxD.dtype)
    z_NxC = jnp.dot(hidden_NxD, w_DxC, preferred_element_type=jnp.float32)
    return z_NxC * (1.0 / temperature), w_DxC


def _target_columns(unembed_DxV, targets_N, dtype):
    """W[:, t] per token as [N, D], rounded to the matmul dtype like the blocks; ids outside [0, V) give zeros."""
    return jnp.take(unembed_DxV, targets_N, axis=1, mode="fill", fill_value=0).T.astype(dtype)


def _target_logit(hidden_NxD, unembed_DxV, targets_N, temperature):
    w_NxD = _target_columns(unembed_DxV, targets_N, hidden_NxD.dtype)
    prod = hidden_NxD.astype(jnp.float32) * w_NxD.astype(jnp.float32)
    return jnp.sum(prod, axis=-1) * (1.0 / temperature)


def _forward(hidden_NxD, unembed_DxV, targets_N, temperature, blocks):
    """Returns (logprob, entropy, lse), float32 [N] each."""
    n = hidden_NxD.shape[0]

    def body(stats, start, size):
        z_NxC, _ = _logits_block(hidden_NxD, unembed_DxV, start, size, temperature)
        return tile_math.update_stats(stats, z_NxC)

    stats = _vocab_loop(body, tile_math.init_stats(n), unembed_DxV.shape[1], blocks.vocab)
    lse_N, entropy_N = tile_math.finalize_stats(stats)
    return _target_logit(hidden_NxD, unembed_DxV, targets_N, temperature) - lse_N, entropy_N, lse_N


def _backward(hidden_NxD, unembed_DxV, targets_N, lse_N, entropy_N, g_lp_N,
              g_ent_N, temperature, blocks):
    """Returns (d hidden, d unembed) in the input dtypes."""
    compute_dtype = hidden_NxD.dtype
    mean_z_N = lse_N - entropy_N
    g_lp_N = g_lp_N.astype(jnp.float32)
    g_ent_N = g_ent_N.astype(jnp.float32)
    inv_t = 1.0 / temperature
    # The same blocks as rows [C, D], so d hidden is a plain [N, C] @ [C, D] product: with the
    # transposed [D, C] block, XLA's CPU backend ran that product in float32.
    unembed_VxD = unembed_DxV.T
    hidden_DxN = rows_last(hidden_NxD)  # so d unembed is a row-major product too (see rows_last)

    def body(carry, start, size):
        dh_NxD, dw_DxV = carry
        z_NxC, _ = _logits_block(hidden_NxD, unembed_DxV, start, size, temperature)
        dz_NxC = tile_math.softmax_grad(z_NxC, lse_N, mean_z_N, g_lp_N * inv_t, g_ent_N * inv_t)
        dz_NxC = dz_NxC.astype(compute_dtype)
        w_CxD = lax.dynamic_slice_in_dim(unembed_VxD, start, size, axis=0).astype(compute_dtype)
        dh_NxD = dh_NxD + jnp.dot(dz_NxC, w_CxD, preferred_element_type=jnp.float32)
        dw_DxC = jnp.dot(hidden_DxN, dz_NxC, preferred_element_type=jnp.float32)
        dw_DxV = lax.dynamic_update_slice_in_dim(
            dw_DxV, dw_DxC.astype(dw_DxV.dtype), start, axis=1)
        return dh_NxD, dw_DxV

    init = (jnp.zeros(hidden_NxD.shape, jnp.float32),
            jnp.zeros(unembed_DxV.shape, unembed_DxV.dtype))
    dh_NxD, dw_DxV = _vocab_loop(body, init, unembed_DxV.shape[1], blocks.vocab)
    # The one-hot term g_lp * onehot_t / T: one column of W per token, both ways.
    g_t_N = g_lp_N * inv_t
    dh_NxD = dh_NxD + g_t_N[:, None] * _target_columns(unembed_DxV, targets_N, compute_dtype).astype(jnp.float32)
    dw_target_DxN = (hidden_NxD.astype(jnp.float32) * g_t_N[:, None]).T
    dw_DxV = dw_DxV.at[:, targets_N].add(dw_target_DxN.astype(dw_DxV.dtype), mode="drop")
    return dh_NxD.astype(hidden_NxD.dtype), dw_DxV


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _fused(hidden_NxD, unembed_DxV, targets_N, temperature, blocks):
    logprob_N, entropy_N, _ = _forward(hidden_NxD, unembed_DxV, targets_N,
                                       temperature, blocks)
    return logprob_N, entropy_N


def _fused_fwd(hidden_NxD, unembed_DxV, targets_N, temperature, blocks):
    logprob_N, entropy_N, lse_N = _forward(hidden_NxD, unembed_DxV, targets_N,
                                           temperature, blocks)
    residuals = (hidden_NxD, unembed_DxV, targets_N, lse_N, entropy_N)
    return (logprob_N, entropy_N), residuals


def _fused_bwd(temperature, blocks, residuals, cotangents):
    hidden_NxD, unembed_DxV, targets_N, lse_N, entropy_N = residuals
    g_lp_N, g_ent_N = cotangents
    dh, dw = _backward(hidden_NxD, unembed_DxV, targets_N, lse_N, entropy_N,
                       g_lp_N, g_ent_N, temperature, blocks)
    return dh, dw, None


_fused.defvjp(_fused_fwd, _fused_bwd)


def token_logprobs_and_entropy(hidden_NxD: jax.Array, unembed_DxV: jax.Array,
                               targets_N: jax.Array, *,
                               temperature: float = 1.0,
                               blocks: BlockSizes | None = None
                               ) -> tuple[jax.Array, jax.Array]:
    """(log p(target), entropy) float32 [N] without materialising [N, V]."""
    blocks = XLA_CHUNKED if blocks is None else blocks
    return _fused(hidden_NxD, unembed_DxV, targets_N.astype(jnp.int32),
                  float(temperature), blocks)
