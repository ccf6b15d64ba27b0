"""Running bf16 compute fast, in particular on XLA's CPU backend.

bf16 matmuls with float32 accumulation run about twice as fast as float32
ones on a CPU with AVX-512 BF16 or AMX, but XLA's CPU backend handles little
else in bf16 natively: it converts whole arrays to float32 and back to
slice, update, concatenate or stack them, and autodiff turns every bf16
matmul's backward into a float32 one. The helpers here keep what must be
bf16 (matmul operands) in bf16 and everything stored in float32, each choice
measured on the training step and the decode loop (docs in each function).
On accelerators they reduce to the plain operations.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from kernels.layout import rows_last  # lives with the kernels, which may not import rft_jax


def concat_bits(arrays: list[jax.Array], axis: int) -> jax.Array:
    """`jnp.concatenate`, moving 2-byte floats as uint16: XLA's CPU backend converts a bf16 concatenate to
    f32 and back (4x the time of moving the bits)."""
    dtype = arrays[0].dtype
    if dtype.itemsize != 2 or not jnp.issubdtype(dtype, jnp.floating):
        return jnp.concatenate(arrays, axis)
    bits = [jax.lax.bitcast_convert_type(a, jnp.uint16) for a in arrays]
    return jax.lax.bitcast_convert_type(jnp.concatenate(bits, axis), dtype)


MATMUL = "matmul"  # the checkpoint name of matmul outputs, which `layer_checkpoint` saves


def storage_dtype(dtype):
    """The dtype for values written piecewise into a larger array (scan outputs and residuals, caches).

    XLA's CPU backend has no bf16 dynamic-update-slice or dynamic-slice: it
    converts the whole destination (or source) to f32 and back on every
    access, so a scan over 30 layers that stacks bf16 outputs copies the stack
    30 times. On a CPU these values are therefore kept in float32 (holding
    compute-dtype-rounded values); elsewhere in the compute dtype.
    """
    return jnp.float32 if jax.default_backend() == "cpu" else jnp.dtype(dtype)


_SAVE_MATMULS = jax.checkpoint_policies.save_from_both_policies(
    jax.checkpoint_policies.dots_saveable, jax.checkpoint_policies.save_only_these_names(MATMUL))


def layer_checkpoint(body, remat: bool):
    """The scanned layer body under the chosen rematerialisation.

    remat: recompute the layer in the backward pass. Otherwise, on a CPU, the
    matmul outputs (float32) are saved and the elementwise work between them
    is recomputed: saving every intermediate cost more in writes of stacked
    residuals (and their zero-filled buffers) than recomputing it, and saved
    bf16 casts are stacked by dynamic-update-slice (see `storage_dtype`).
    """
    if remat:
        return jax.checkpoint(body)
    if storage_dtype(jnp.bfloat16) == jnp.float32:
        return jax.checkpoint(body, policy=_SAVE_MATMULS)
    return body


def mixed_einsum(spec: str, a: jax.Array, b: jax.Array, dtype) -> jax.Array:
    """einsum of two operands multiplied in `dtype` with float32 results, in both passes.

    Autodiff of such an einsum multiplies the float32 output gradient by the
    other (bf16) operand, which runs as a float32 matmul: on a CPU with bf16
    matmuls, at half speed, and it was the whole backward pass. Here the
    gradients multiply in `dtype` too (with float32 accumulation), the usual
    mixed-precision practice. In float32 this is the plain einsum.
    """
    if jnp.dtype(dtype) == jnp.float32:
        return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)
    return checkpoint_name(_mixed_einsum(spec, a, b, jnp.dtype(dtype)), MATMUL)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3))
def _mixed_einsum(spec, a, b, dtype):
    return jnp.einsum(spec, a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


def _mixed_einsum_fwd(spec, a, b, dtype):
    return _mixed_einsum(spec, a, b, dtype), (a, b)


def _mixed_einsum_bwd(spec, dtype, res, g):
    a, b = res
    ins, out = spec.replace("...", "@").split("->")
    sa, sb = ins.split(",")
    spec_of = lambda x, y, z: f"{x},{y}->{z}".replace("@", "...")  # noqa: E731
    g = g.astype(dtype)
    da = jnp.einsum(spec_of(out, sb, sa), g, b.astype(dtype), preferred_element_type=jnp.float32)
    if (sa, sb, out) == ("nd", "de", "ne"):  # a dense layer's weight gradient, the narrower side transposed
        if a.shape[-1] <= g.shape[-1]:
            db = jnp.matmul(rows_last(a.astype(dtype)), g, preferred_element_type=jnp.float32)
        else:  # e.g. the MLP's down projection: a [N, 1536] transposed took 36 ms a layer, g [N, 576] 2
            db = rows_last(jnp.matmul(rows_last(g), a.astype(dtype), preferred_element_type=jnp.float32))
    else:
        db = jnp.einsum(spec_of(sa, out, sb), a.astype(dtype), g, preferred_element_type=jnp.float32)
    return da.astype(a.dtype), db.astype(b.dtype)


_mixed_einsum.defvjp(_mixed_einsum_fwd, _mixed_einsum_bwd)
