"""Pallas (Triton) GPU kernels: forward, d hidden and d unembedding.

Layout of the work (Nb = blocks.tokens, Vb = blocks.vocab, Kb = blocks.depth):
- forward: one program per block of Nb tokens; it loops over all vocabulary
  blocks, builds each [Nb, Vb] logits tile with a Kb-stepped matmul and folds
  it into the online (max, sum, entropy) statistics of tile_math. Writes
  logprob, entropy and lse: O(N) outputs.
- d hidden: one program per token block; it recomputes every logits tile,
  turns it into dL/dz and accumulates dz @ W_block^T into its own rows of d
  hidden (read-modify-write, float32, no atomics: each row has one owner).
- d unembedding: one program per vocabulary block; it loops over token blocks
  and accumulates h_block^T @ dz into its own columns of d unembedding.
Neither pass holds more than one [Nb, Vb] tile per program, so memory is the
inputs plus the two gradients. The price is recomputing the logits twice in
the backward pass (5 matmuls of N*D*V in all, against 3 for the naive XLA
version); splitting the gradients by owner avoids nondeterministic atomics.

The read-modify-write of a program's own gradient tile is followed by a CTA
barrier (`debug_barrier`): the tile's load and store may use different
thread layouts, so without it a thread could read an element another thread
has not finished writing in the previous step.

Operands are cast to a common dtype before `tl.dot` (float32 inputs use
Triton's default, TF32 on Ampere and later); accumulation is float32.
Shapes need not be multiples of the blocks: all loads and stores are masked.
Block sizes must be powers of two and at least 16 (tl.dot). With
`interpret=True` the same kernels run on CPU, which is how they are tested
where there is no GPU.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from kernels.fused_logprob import tile_math
from kernels.fused_logprob.block_sizes import PALLAS_GPU, BlockSizes


def _check_blocks(blocks: BlockSizes) -> None:
    """Triton needs power-of-two tiles of at least 16 for tl.dot."""
    for name in ("tokens", "vocab", "depth"):
        size = getattr(blocks, name)
        if size is None or size < 16 or size & (size - 1):
            raise ValueError(f"pallas_gpu needs BlockSizes.{name} a power of two "
                             f">= 16, got {blocks}")


def _row_vector(ref, row0, nb, n, dtype=jnp.float32):
    """Loads [row0, row0 + nb) of a length-n vector, 0 past the end."""
    ok = row0 + jnp.arange(nb) < n
    return plgpu.load(ref.at[pl.ds(row0, nb)], mask=ok, other=0).astype(dtype)


def _barrier(enabled: bool) -> None:
    """CTA barrier on GPU; the interpreter runs each program sequentially and has none."""
    if enabled:
        plgpu.debug_barrier()


def _compute_dtype(h_ref, w_ref):
    """tl.dot needs both operands in one dtype."""
    return jnp.promote_types(h_ref.dtype, w_ref.dtype)


def _logits_tile(h_ref, w_ref, row0, col0, dims, blocks, inv_t):
    """float32 [Nb, Vb] logits h[rows] @ w[:, cols] / T, stepping over D."""
    n, d, v = dims
    nb, vb, kb = blocks.tokens, blocks.vocab, blocks.depth
    rows_ok = (row0 + jnp.arange(nb) < n)[:, None]
    cols_ok = (col0 + jnp.arange(vb) < v)[None, :]

    dtype = _compute_dtype(h_ref, w_ref)

    def body(k, acc):
        d_ok = k * kb + jnp.arange(kb) < d
        h = plgpu.load(h_ref.at[pl.ds(row0, nb), pl.ds(k * kb, kb)],
                       mask=rows_ok & d_ok[None, :], other=0.0)
        w = plgpu.load(w_ref.at[pl.ds(k * kb, kb), pl.ds(col0, vb)],
                       mask=d_ok[:, None] & cols_ok, other=0.0)
        return acc + plgpu.dot(h.astype(dtype), w.astype(dtype))

    acc = lax.fori_loop(0, pl.cdiv(d, kb), body,
                        jnp.zeros((nb, vb), jnp.float32))
    return acc * inv_t


def _cols_valid(col0, dims, blocks):
    """[Nb, Vb] mask of columns inside the vocabulary."""
    cols = col0 + jnp.arange(blocks.vocab)
    return jnp.broadcast_to((cols < dims[2])[None, :],
                            (blocks.tokens, blocks.vocab)), cols


def _forward_kernel(h_ref, w_ref, t_ref, lp_ref, ent_ref, lse_ref, *, dims,
                    blocks, inv_t):
    n, _, v = dims
    nb = blocks.tokens
    row0 = pl.program_id(0) * nb
    targets = _row_vector(t_ref, row0, nb, n, jnp.int32)

    def body(j, carry):
        stats, zt = carry
        col0 = j * blocks.vocab
        z = _logits_tile(h_ref, w_ref, row0, col0, dims, blocks, inv_t)
        valid, cols = _cols_valid(col0, dims, blocks)
        stats = tile_math.update_stats(stats, z, valid)
        return stats, zt + tile_math.target_logit(z, cols, targets)

    init = (tile_math.init_stats(nb), jnp.zeros((nb,), jnp.float32))
    stats, zt = lax.fori_loop(0, pl.cdiv(v, blocks.vocab), body, init)
    lse, entropy = tile_math.finalize_stats(stats)
    rows_ok = row0 + jnp.arange(nb) < n
    plgpu.store(lp_ref.at[pl.ds(row0, nb)], zt - lse, mask=rows_ok)
    plgpu.store(ent_ref.at[pl.ds(row0, nb)], entropy, mask=rows_ok)
    plgpu.store(lse_ref.at[pl.ds(row0, nb)], lse, mask=rows_ok)


def _grad_tile(h_ref, w_ref, row_vectors, row0, col0, dims, blocks, inv_t):
    """dL/d(h @ w) for one tile, in the matmul dtype, zero off-range."""
    targets, lse, mean_z, g_lp, g_ent = row_vectors
    z = _logits_tile(h_ref, w_ref, row0, col0, dims, blocks, inv_t)
    valid, cols = _cols_valid(col0, dims, blocks)
    dz = tile_math.logits_grad(z, cols, targets, lse, mean_z, g_lp, g_ent,
                               valid)
    return (dz * inv_t).astype(_compute_dtype(h_ref, w_ref))


def _load_row_vectors(refs, row0, dims, blocks):
    t_ref, lse_ref, mz_ref, glp_ref, gent_ref = refs
    n, nb = dims[0], blocks.tokens
    # Rows past N load g = 0, so their dz, and what they add, is exactly 0.
    return (_row_vector(t_ref, row0, nb, n, jnp.int32),
            *(_row_vector(r, row0, nb, n) for r in
              (lse_ref, mz_ref, glp_ref, gent_ref)))


def _dhidden_kernel(h_ref, w_ref, *refs, dims, blocks, inv_t, barriers):
    *vec_refs, dh_ref = refs
    n, d, v = dims
    nb, vb, kb = blocks.tokens, blocks.vocab, blocks.depth
    row0 = pl.program_id(0) * nb
    rows_ok = (row0 + jnp.arange(nb) < n)[:, None]
    row_vectors = _load_row_vectors(vec_refs, row0, dims, blocks)

    def d_mask(k):
        return rows_ok & (k * kb + jnp.arange(kb) < d)[None, :]

    @pl.loop(0, pl.cdiv(d, kb))
    def _zero(k):
        plgpu.store(dh_ref.at[pl.ds(row0, nb), pl.ds(k * kb, kb)],
                    jnp.zeros((nb, kb), jnp.float32), mask=d_mask(k))

    _barrier(barriers)

    @pl.loop(0, pl.cdiv(v, vb))
    def _vocab_block(j):
        col0 = j * vb
        dz = _grad_tile(h_ref, w_ref, row_vectors, row0, col0, dims, blocks,
                        inv_t)
        cols_ok = (col0 + jnp.arange(vb) < v)[None, :]

        @pl.loop(0, pl.cdiv(d, kb))
        def _depth_step(k):
            w = plgpu.load(w_ref.at[pl.ds(k * kb, kb), pl.ds(col0, vb)],
                           mask=(k * kb + jnp.arange(kb) < d)[:, None] & cols_ok,
                           other=0.0)
            dst = dh_ref.at[pl.ds(row0, nb), pl.ds(k * kb, kb)]
            acc = plgpu.load(dst, mask=d_mask(k), other=0.0)
            w = w.astype(dz.dtype)
            plgpu.store(dst, acc + plgpu.dot(dz, w, trans_b=True), mask=d_mask(k))
            _barrier(barriers)


def _dunembed_kernel(h_ref, w_ref, *refs, dims, blocks, inv_t, barriers):
    *vec_refs, dw_ref = refs
    n, d, v = dims
    nb, vb, kb = blocks.tokens, blocks.vocab, blocks.depth
    col0 = pl.program_id(0) * vb
    cols_ok = (col0 + jnp.arange(vb) < v)[None, :]

    def d_mask(k):
        return (k * kb + jnp.arange(kb) < d)[:, None] & cols_ok

    @pl.loop(0, pl.cdiv(d, kb))
    def _zero(k):
        plgpu.store(dw_ref.at[pl.ds(k * kb, kb), pl.ds(col0, vb)],
                    jnp.zeros((kb, vb), jnp.float32), mask=d_mask(k))

    _barrier(barriers)

    @pl.loop(0, pl.cdiv(n, nb))
    def _token_block(i):
        row0 = i * nb
        row_vectors = _load_row_vectors(vec_refs, row0, dims, blocks)
        dz = _grad_tile(h_ref, w_ref, row_vectors, row0, col0, dims, blocks,
                        inv_t)
        rows_ok = (row0 + jnp.arange(nb) < n)[:, None]

        @pl.loop(0, pl.cdiv(d, kb))
        def _depth_step(k):
            h = plgpu.load(h_ref.at[pl.ds(row0, nb), pl.ds(k * kb, kb)],
                           mask=rows_ok & (k * kb + jnp.arange(kb) < d)[None, :],
                           other=0.0)
            dst = dw_ref.at[pl.ds(k * kb, kb), pl.ds(col0, vb)]
            acc = plgpu.load(dst, mask=d_mask(k), other=0.0)
            h = h.astype(dz.dtype)
            plgpu.store(dst, acc + plgpu.dot(h, dz, trans_a=True), mask=d_mask(k))
            _barrier(barriers)


def _call(kernel, grid, out_shape, blocks, interpret, **params):
    return pl.pallas_call(
        functools.partial(kernel, blocks=blocks, **params),
        out_shape=out_shape, grid=grid, interpret=interpret,
        compiler_params=plgpu.CompilerParams(num_warps=blocks.num_warps,
                                             num_stages=blocks.num_stages))


def _forward(hidden_NxD, unembed_DxV, targets_N, temperature, blocks,
             interpret):
    (n, d), v = hidden_NxD.shape, unembed_DxV.shape[1]
    vec = jax.ShapeDtypeStruct((n,), jnp.float32)
    return _call(_forward_kernel, (pl.cdiv(n, blocks.tokens),), (vec,) * 3,
                 blocks, interpret, dims=(n, d, v), inv_t=1.0 / temperature)(
                     hidden_NxD, unembed_DxV, targets_N)


def _backward(residuals, cotangents, temperature, blocks, interpret):
    hidden_NxD, unembed_DxV, targets_N, lse_N, entropy_N = residuals
    (n, d), v = hidden_NxD.shape, unembed_DxV.shape[1]
    g_lp_N, g_ent_N = (g.astype(jnp.float32) for g in cotangents)
    args = (hidden_NxD, unembed_DxV, targets_N, lse_N, lse_N - entropy_N,
            g_lp_N, g_ent_N)
    params = dict(dims=(n, d, v), inv_t=1.0 / temperature)
    params["barriers"] = not interpret  # the interpreter has no CTA barrier
    dh = _call(_dhidden_kernel, (pl.cdiv(n, blocks.tokens),),
               jax.ShapeDtypeStruct((n, d), jnp.float32), blocks, interpret,
               **params)(*args)
    dw = _call(_dunembed_kernel, (pl.cdiv(v, blocks.vocab),),
               jax.ShapeDtypeStruct((d, v), jnp.float32), blocks, interpret,
               **params)(*args)
    return dh.astype(hidden_NxD.dtype), dw.astype(unembed_DxV.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _fused(hidden_NxD, unembed_DxV, targets_N, temperature, blocks,
           interpret):
    logprob_N, entropy_N, _ = _forward(hidden_NxD, unembed_DxV, targets_N,
                                       temperature, blocks, interpret)
    return logprob_N, entropy_N


def _fused_fwd(hidden_NxD, unembed_DxV, targets_N, temperature, blocks,
               interpret):
    logprob_N, entropy_N, lse_N = _forward(hidden_NxD, unembed_DxV, targets_N,
                                           temperature, blocks, interpret)
    residuals = (hidden_NxD, unembed_DxV, targets_N, lse_N, entropy_N)
    return (logprob_N, entropy_N), residuals


def _fused_bwd(temperature, blocks, interpret, residuals, cotangents):
    dh, dw = _backward(residuals, cotangents, temperature, blocks, interpret)
    return dh, dw, None


_fused.defvjp(_fused_fwd, _fused_bwd)


def token_logprobs_and_entropy(hidden_NxD: jax.Array, unembed_DxV: jax.Array,
                               targets_N: jax.Array, *,
                               temperature: float = 1.0,
                               blocks: BlockSizes | None = None,
                               interpret: bool = False
                               ) -> tuple[jax.Array, jax.Array]:
    """(log p(target), entropy) float32 [N]; `interpret=True` runs on CPU."""
    blocks = PALLAS_GPU if blocks is None else blocks
    _check_blocks(blocks)
    return _fused(hidden_NxD, unembed_DxV, targets_N.astype(jnp.int32),
                  float(temperature), blocks, bool(interpret))
