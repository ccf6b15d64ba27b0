"""Pallas TPU (Mosaic) kernels: forward, d hidden and d unembedding.

Layout of the work (Nb = blocks.tokens, Vb = blocks.vocab; D is never split):
- forward, grid (N/Nb "parallel", V/Vb "arbitrary"): each step multiplies an
  [Nb, D] hidden block by a [D, Vb] unembedding block on the MXU and folds the
  [Nb, Vb] logits tile into online (max, sum, entropy) statistics kept in VMEM
  scratch; the last vocab step writes logprob, entropy and lse.
- d hidden, grid (N/Nb "parallel", V/Vb "arbitrary"): recomputes each tile,
  turns it into dL/dz and accumulates dz @ W_block^T in an [Nb, D] float32
  VMEM scratch, written out on the last vocab step.
- d unembedding, grid (V/Vb "parallel", N/Nb "arbitrary"): the same tile,
  accumulated as h_block^T @ dz into a [D, Vb] float32 scratch.
Each gradient block has one owner (no atomics, deterministic); the price is 5
matmuls of N*D*V in all, as in pallas_gpu.py. The math is tile_math's, written
here with per-row vectors as [Nb, 1] columns (keepdims), the layout Mosaic
reduces and broadcasts natively.

Shapes: N is padded to a multiple of Nb and V to a multiple of Vb in the
wrapper (zeros), so every block is full; padded vocabulary columns are masked
to NEG_BIG (probability 0, zero gradient) and padded tokens get zero
cotangents. Padding V copies the unembedding once per pass: pick a
`blocks.vocab` that divides V (49,152 = 96 * 512; 151,936 = 1187 * 128) to
avoid it (`blocks=None` does: `default_blocks`). Tile rules: `tokens` a multiple of the hidden dtype's sublane tile
(8 for float32, 16 for bfloat16), `vocab` a multiple of 128 (lanes); both are
clamped to the (rounded-up) problem size so small inputs are not padded to a
whole default block. Matmuls run in the hidden states' dtype (an unembedding
stored wider is cast per block) with float32 accumulation.

Interpret mode: `interpret=True` uses jax's TPU-semantics interpreter,
`pltpu.InterpretParams()`, rather than the generic HLO interpreter (which also
runs these kernels). It reads the TPU compiler params: the "parallel" grid
axes are visited in a shuffled (seeded) order and can be split over simulated
cores (`num_cores_or_threads`), so a kernel that relies on their order fails;
VMEM scratch starts as NaN, so a missing initialisation shows; out-of-bounds
reads raise. An `InterpretParams` instance may be passed instead of True.
Validated in interpret mode only: these kernels have never run on a TPU.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from kernels.fused_logprob.block_sizes import PALLAS_TPU, BlockSizes
from kernels.fused_logprob.tile_math import NEG_BIG

_LANES = 128
_NT = (((1,), (1,)), ((), ()))  # a @ b.T: contract the last dims
_TN = (((0,), (0,)), ((), ()))  # a.T @ b: contract the first dims


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _tiles(n: int, v: int, dtype, blocks: BlockSizes) -> tuple[int, int]:
    """(Nb, Vb) after validation, clamped to the padded problem size."""
    sublanes = 8 * max(1, 4 // jnp.dtype(dtype).itemsize)
    if blocks.tokens is None or blocks.tokens % sublanes or blocks.vocab % _LANES:
        raise ValueError(f"pallas_tpu needs BlockSizes.tokens a multiple of {sublanes} "
                         f"(for {jnp.dtype(dtype).name} hiddens) and vocab a multiple of "
                         f"{_LANES}, got {blocks}")
    return (min(blocks.tokens, _round_up(n, sublanes)),
            min(blocks.vocab, _round_up(v, _LANES)))


def _logits(h_ref, w_ref, col0, v, inv_t):
    """float32 [Nb, Vb] tile of h @ w / T, its column ids and the in-vocabulary mask."""
    h = h_ref[...]
    z = jnp.dot(h, w_ref[...].astype(h.dtype), preferred_element_type=jnp.float32) * inv_t
    cols = col0 + lax.broadcasted_iota(jnp.int32, z.shape, 1)
    return z, cols, cols < v


def _forward_kernel(h_ref, w_ref, t_ref, lp_ref, ent_ref, lse_ref,
                    m_ref, s_ref, u_ref, zt_ref, *, v, inv_t):
    j = pl.program_id(1)

    @pl.when(j == 0)
    def _init():
        m_ref[...] = jnp.full(m_ref.shape, NEG_BIG, jnp.float32)
        for ref in (s_ref, u_ref, zt_ref):
            ref[...] = jnp.zeros(ref.shape, jnp.float32)

    z, cols, valid = _logits(h_ref, w_ref, j * w_ref.shape[1], v, inv_t)
    hit = valid & (cols == t_ref[...])  # ids outside [0, V) never hit: zt = 0, as in xla_chunked
    zt_ref[...] += jnp.sum(jnp.where(hit, z, 0.0), axis=1, keepdims=True)
    # tile_math.update_stats on [Nb, 1] columns: m max, s = sum e^(z-m), u = sum e^(z-m)(z-m).
    z = jnp.where(valid, z, NEG_BIG)
    m, s, u = m_ref[...], s_ref[...], u_ref[...]
    m_new = jnp.maximum(m, jnp.max(z, axis=1, keepdims=True))
    scale = jnp.exp(m - m_new)
    shifted = z - m_new
    e = jnp.exp(shifted)
    eu = jnp.where(valid, e * shifted, 0.0)  # as tile_math: padded columns add nothing
    u_ref[...] = scale * (u + (m - m_new) * s) + jnp.sum(eu, axis=1, keepdims=True)
    s_ref[...] = scale * s + jnp.sum(e, axis=1, keepdims=True)
    m_ref[...] = m_new

    @pl.when(j == pl.num_programs(1) - 1)
    def _finish():
        s = s_ref[...]
        log_s = jnp.log(s)
        lse = m_ref[...] + log_s
        lp_ref[...] = zt_ref[...] - lse
        ent_ref[...] = log_s - u_ref[...] / s
        lse_ref[...] = lse


def _dlogits(h_ref, w_ref, row_refs, col0, v, inv_t):
    """dL/d(h @ w) for one tile (tile_math.logits_grad), in h's dtype, zero on padded columns."""
    t_ref, lse_ref, mz_ref, glp_ref, gent_ref = row_refs
    z, cols, valid = _logits(h_ref, w_ref, col0, v, inv_t)
    g_lp = glp_ref[...]
    p = jnp.exp(z - lse_ref[...])
    dz = -p * (g_lp + gent_ref[...] * (z - mz_ref[...]))
    dz = dz + jnp.where(cols == t_ref[...], g_lp, 0.0)
    # Padded tokens have g = 0, so their rows are exactly 0 too.
    return (jnp.where(valid, dz, 0.0) * inv_t).astype(h_ref.dtype)


def _dhidden_kernel(h_ref, w_ref, *refs, v, inv_t):
    *row_refs, dh_ref, acc_ref = refs
    j = pl.program_id(1)

    @pl.when(j == 0)
    def _init():
        acc_ref[...] = jnp.zeros(acc_ref.shape, jnp.float32)

    dz = _dlogits(h_ref, w_ref, row_refs, j * w_ref.shape[1], v, inv_t)
    w = w_ref[...].astype(dz.dtype)
    acc_ref[...] += lax.dot_general(dz, w, _NT, preferred_element_type=jnp.float32)

    @pl.when(j == pl.num_programs(1) - 1)
    def _finish():
        dh_ref[...] = acc_ref[...].astype(dh_ref.dtype)


def _dunembed_kernel(h_ref, w_ref, *refs, v, inv_t):
    *row_refs, dw_ref, acc_ref = refs
    j, i = pl.program_id(0), pl.program_id(1)

    @pl.when(i == 0)
    def _init():
        acc_ref[...] = jnp.zeros(acc_ref.shape, jnp.float32)

    dz = _dlogits(h_ref, w_ref, row_refs, j * w_ref.shape[1], v, inv_t)
    acc_ref[...] += lax.dot_general(h_ref[...], dz, _TN, preferred_element_type=jnp.float32)

    @pl.when(i == pl.num_programs(1) - 1)
    def _finish():
        dw_ref[...] = acc_ref[...].astype(dw_ref.dtype)


def _pad_to(x, shape, value=0):
    widths = [(0, s - d) for s, d in zip(shape, x.shape)]
    return x if all(w == 0 for _, w in widths) else jnp.pad(x, widths, constant_values=value)


def _call(kernel, *, grid, in_specs, out_specs, out_shape, scratch, semantics,
          interpret, **params):
    return pl.pallas_call(
        functools.partial(kernel, **params), out_shape=out_shape, grid=grid,
        in_specs=in_specs, out_specs=out_specs, scratch_shapes=scratch,
        compiler_params=pltpu.CompilerParams(dimension_semantics=semantics),
        interpret=interpret)


def _forward(hidden_NxD, unembed_DxV, targets_N, temperature, blocks, interpret):
    """(logprob, entropy, lse), float32 [N] each."""
    (n, d), v = hidden_NxD.shape, unembed_DxV.shape[1]
    nb, vb = _tiles(n, v, hidden_NxD.dtype, blocks)
    n_pad, v_pad = _round_up(n, nb), _round_up(v, vb)
    row = pl.BlockSpec((nb, 1), lambda i, j: (i, 0))
    col = jax.ShapeDtypeStruct((n_pad, 1), jnp.float32)
    outs = _call(
        _forward_kernel, grid=(n_pad // nb, v_pad // vb),
        in_specs=[pl.BlockSpec((nb, d), lambda i, j: (i, 0)),
                  pl.BlockSpec((d, vb), lambda i, j: (0, j)), row],
        out_specs=[row] * 3, out_shape=[col] * 3,
        scratch=[pltpu.VMEM((nb, 1), jnp.float32)] * 4,
        semantics=("parallel", "arbitrary"), interpret=interpret,
        v=v, inv_t=1.0 / temperature)(
            _pad_to(hidden_NxD, (n_pad, d)), _pad_to(unembed_DxV, (d, v_pad)),
            _pad_to(targets_N[:, None], (n_pad, 1)))
    return tuple(o[:n, 0] for o in outs)


def _backward(residuals, cotangents, temperature, blocks, interpret):
    """(d hidden, d unembed) in the input dtypes."""
    hidden_NxD, unembed_DxV, targets_N, lse_N, entropy_N = residuals
    (n, d), v = hidden_NxD.shape, unembed_DxV.shape[1]
    nb, vb = _tiles(n, v, hidden_NxD.dtype, blocks)
    n_pad, v_pad = _round_up(n, nb), _round_up(v, vb)
    g_lp_N, g_ent_N = (g.astype(jnp.float32) for g in cotangents)
    # Zero-padded cotangents make the padded tokens' dz, and all they add, exactly 0.
    rows = [_pad_to(x[:, None], (n_pad, 1)) for x in
            (targets_N, lse_N, lse_N - entropy_N, g_lp_N, g_ent_N)]
    args = (_pad_to(hidden_NxD, (n_pad, d)), _pad_to(unembed_DxV, (d, v_pad)), *rows)
    params = dict(v=v, inv_t=1.0 / temperature, interpret=interpret)

    dh = _call(  # grid (token block i, vocab block j)
        _dhidden_kernel, grid=(n_pad // nb, v_pad // vb),
        in_specs=[pl.BlockSpec((nb, d), lambda i, j: (i, 0)),
                  pl.BlockSpec((d, vb), lambda i, j: (0, j)),
                  *[pl.BlockSpec((nb, 1), lambda i, j: (i, 0))] * len(rows)],
        out_specs=pl.BlockSpec((nb, d), lambda i, j: (i, 0)),
        out_shape=jax.ShapeDtypeStruct((n_pad, d), hidden_NxD.dtype),
        scratch=[pltpu.VMEM((nb, d), jnp.float32)],
        semantics=("parallel", "arbitrary"), **params)(*args)
    dw = _call(  # grid (vocab block j, token block i): the token axis is the reduction
        _dunembed_kernel, grid=(v_pad // vb, n_pad // nb),
        in_specs=[pl.BlockSpec((nb, d), lambda j, i: (i, 0)),
                  pl.BlockSpec((d, vb), lambda j, i: (0, j)),
                  *[pl.BlockSpec((nb, 1), lambda j, i: (i, 0))] * len(rows)],
        out_specs=pl.BlockSpec((d, vb), lambda j, i: (0, j)),
        out_shape=jax.ShapeDtypeStruct((d, v_pad), unembed_DxV.dtype),
        scratch=[pltpu.VMEM((d, vb), jnp.float32)],
        semantics=("parallel", "arbitrary"), **params)(*args)
    return dh[:n], dw[:, :v]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _fused(hidden_NxD, unembed_DxV, targets_N, temperature, blocks, interpret):
    logprob_N, entropy_N, _ = _forward(hidden_NxD, unembed_DxV, targets_N,
                                       temperature, blocks, interpret)
    return logprob_N, entropy_N


def _fused_fwd(hidden_NxD, unembed_DxV, targets_N, temperature, blocks, interpret):
    logprob_N, entropy_N, lse_N = _forward(hidden_NxD, unembed_DxV, targets_N,
                                           temperature, blocks, interpret)
    # The unpadded inputs are kept, not the padded copies, so no extra [D, V] lives until backward.
    residuals = (hidden_NxD, unembed_DxV, targets_N, lse_N, entropy_N)
    return (logprob_N, entropy_N), residuals


def _fused_bwd(temperature, blocks, interpret, residuals, cotangents):
    dh, dw = _backward(residuals, cotangents, temperature, blocks, interpret)
    return dh, dw, None


_fused.defvjp(_fused_fwd, _fused_bwd)


def default_blocks(v: int) -> BlockSizes:
    """PALLAS_TPU with the widest vocabulary block up to its own that divides V rounded up to the lanes, so a
    vocabulary like Qwen's (151,936 = 1,187 x 128) is not copied into a padded one on every pass."""
    v_lanes = _round_up(v, _LANES)
    vocab = next(w for w in range(PALLAS_TPU.vocab, 0, -_LANES) if v_lanes % w == 0)
    return dataclasses.replace(PALLAS_TPU, vocab=vocab)


def token_logprobs_and_entropy(hidden_NxD: jax.Array, unembed_DxV: jax.Array,
                               targets_N: jax.Array, *,
                               temperature: float = 1.0,
                               blocks: BlockSizes | None = None,
                               interpret: bool | pltpu.InterpretParams = False
                               ) -> tuple[jax.Array, jax.Array]:
    """(log p(target), entropy) float32 [N]; `interpret=True` runs on CPU (TPU interpreter)."""
    blocks = default_blocks(unembed_DxV.shape[1]) if blocks is None else blocks
    _tiles(1, 1, hidden_NxD.dtype, blocks)  # validate before tracing
    if interpret is True:
        interpret = pltpu.InterpretParams()
    return _fused(hidden_NxD, unembed_DxV, targets_N.astype(jnp.int32),
                  float(temperature), blocks, interpret)
