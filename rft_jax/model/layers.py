"""The small building blocks of the decoder: norms, rotary embeddings, projections."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from rft_jax.model.config import ModelConfig, RopeScaling


def rms_norm(x_xD: jax.Array, scale_D: jax.Array, eps: float) -> jax.Array:
    """RMSNorm computed in float32 whatever the activation dtype (as HF does)."""
    x32 = x_xD.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (x32 * scale_D.astype(jnp.float32)).astype(x_xD.dtype)


def _inverse_frequencies(head_dim: int, theta: float, scaling: RopeScaling) -> tuple[jax.Array, float]:
    """Per-pair inverse frequencies and the attention factor of a RoPE variant."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    kind = scaling.kind
    if kind == "linear":
        return inv_freq / scaling.factor, 1.0
    if kind == "llama3":
        low_wavelen = scaling.original_max_position_embeddings / scaling.low_freq_factor
        high_wavelen = scaling.original_max_position_embeddings / scaling.high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        smooth = (scaling.original_max_position_embeddings / wavelen - scaling.low_freq_factor) / (
            scaling.high_freq_factor - scaling.low_freq_factor
        )
        scaled = jnp.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
        mid = (1 - smooth) * inv_freq / scaling.factor + smooth * inv_freq
        is_mid = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return jnp.where(is_mid, mid, scaled), 1.0
    if kind == "yarn":
        base = scaling.original_max_position_embeddings

        def correction_dim(rotations):
            return head_dim * math.log(base / (rotations * 2 * math.pi)) / (2 * math.log(theta))

        low = max(math.floor(correction_dim(scaling.beta_fast)), 0)
        high = min(math.ceil(correction_dim(scaling.beta_slow)), head_dim - 1)
        ramp = jnp.clip((jnp.arange(head_dim // 2, dtype=jnp.float32) - low) / max(high - low, 1e-3), 0, 1)
        extrapolation = 1 - ramp
        inv = inv_freq / scaling.factor * (1 - extrapolation) + inv_freq * extrapolation
        factor = scaling.attention_factor or (0.1 * math.log(scaling.factor) + 1.0 if scaling.factor > 1 else 1.0)
        return inv, factor
    # "default" and "dynamic" (dynamic only changes past the trained context, which we never exceed).
    return inv_freq, 1.0


def rope_tables(positions_xT: jax.Array, cfg: ModelConfig) -> tuple[jax.Array, jax.Array]:
    """cos/sin of shape [..., T, K/2] for integer positions."""
    inv_freq, factor = _inverse_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
    angles = positions_xT.astype(jnp.float32)[..., None] * inv_freq
    return jnp.cos(angles) * factor, jnp.sin(angles) * factor


def apply_rope(x_xTxHxK: jax.Array, cos_xTxK2: jax.Array, sin_xTxK2: jax.Array) -> jax.Array:
    """Rotates the two halves of each head (the HF `rotate_half` convention)."""
    half = x_xTxHxK.shape[-1] // 2
    x1, x2 = x_xTxHxK[..., :half], x_xTxHxK[..., half:]
    cos, sin = cos_xTxK2[..., None, :], sin_xTxK2[..., None, :]
    x1f, x2f = x1.astype(jnp.float32), x2.astype(jnp.float32)
    out = jnp.concatenate([x1f * cos - x2f * sin, x2f * cos + x1f * sin], axis=-1)
    return out.astype(x_xTxHxK.dtype)


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
    db = jnp.einsum(spec_of(sa, out, sb), a.astype(dtype), g, preferred_element_type=jnp.float32)
    return da.astype(a.dtype), db.astype(b.dtype)


_mixed_einsum.defvjp(_mixed_einsum_fwd, _mixed_einsum_bwd)


def dense(x_xD: jax.Array, proj: dict, lora: dict | None, lora_scale: float, dtype) -> jax.Array:
    """x @ W (+ b) (+ LoRA: (x @ A) @ B * scale), matmuls in `dtype` with float32 accumulation."""
    y = mixed_einsum("...d,de->...e", x_xD, proj["w"], dtype)
    if "b" in proj:
        y = y + proj["b"].astype(jnp.float32)
    if lora is not None:
        y = y + checkpoint_name(lora_delta(x_xD, lora["a"], lora["b"], lora_scale, jnp.dtype(dtype)), MATMUL)
    return y


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def lora_delta(x_xD: jax.Array, a_DxR: jax.Array, b_RxE: jax.Array, scale: float, dtype) -> jax.Array:
    """scale * (x @ A) @ B, with a backward that contracts over the tokens with the small factor transposed.

    Autodiff's gradient of B contracts x@A [N, R] with the output gradient [N, E]
    over N, and XLA's CPU backend laid that out by transposing the [N, E]
    gradient (50 ms for N = 4032, E = 1536, on every layer); transposing the
    [N, R] factor instead costs nothing.
    """
    return _lora_forward(x_xD, a_DxR, b_RxE, scale, dtype)[0]


def _lora_forward(x, a, b, scale, dtype):
    xa = jnp.einsum("...d,dr->...r", x.astype(dtype), a.astype(dtype), preferred_element_type=jnp.float32)
    y = jnp.einsum("...r,re->...e", xa.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32) * scale
    return y, xa


def _lora_fwd(x, a, b, scale, dtype):
    y, xa = _lora_forward(x, a, b, scale, dtype)
    return y, (x, a, b, xa)


def _lora_bwd(scale, dtype, res, dy):
    x, a, b, xa = res
    d, r = a.shape
    x_NxD, xa_NxR = x.reshape(-1, d).astype(dtype), xa.reshape(-1, r).astype(dtype)
    dy_NxE = (dy.reshape(-1, dy.shape[-1]) * scale).astype(dtype)
    f32 = jnp.float32
    db = jnp.matmul(xa_NxR.T, dy_NxE, preferred_element_type=f32)  # [R, N] @ [N, E]
    dxa_NxR = jnp.einsum("ne,re->nr", dy_NxE, b.astype(dtype), preferred_element_type=f32).astype(dtype)
    da = jnp.matmul(dxa_NxR.T, x_NxD, preferred_element_type=f32).T  # ([R, N] @ [N, D]).T
    dx = jnp.einsum("nr,dr->nd", dxa_NxR, a.astype(dtype), preferred_element_type=f32)
    return dx.reshape(x.shape).astype(x.dtype), da.astype(a.dtype), db.astype(b.dtype)


lora_delta.defvjp(_lora_fwd, _lora_bwd)


def concat_bits(arrays: list[jax.Array], axis: int) -> jax.Array:
    """`jnp.concatenate`, moving 2-byte floats as uint16: XLA's CPU backend converts a bf16 concatenate to
    f32 and back (4x the time of moving the bits)."""
    dtype = arrays[0].dtype
    if dtype.itemsize != 2 or not jnp.issubdtype(dtype, jnp.floating):
        return jnp.concatenate(arrays, axis)
    bits = [jax.lax.bitcast_convert_type(a, jnp.uint16) for a in arrays]
    return jax.lax.bitcast_convert_type(jnp.concatenate(bits, axis), dtype)


def storage_dtype(dtype):
    """The dtype for values written piecewise into a larger array (scan outputs and residuals, caches).

    XLA's CPU backend has no bf16 dynamic-update-slice or dynamic-slice: it
    converts the whole destination (or source) to f32 and back on every
    access, so a scan over 30 layers that stacks bf16 outputs copies the stack
    30 times. On a CPU these values are therefore kept in float32 (holding
    compute-dtype-rounded values); elsewhere in the compute dtype.
    """
    return jnp.float32 if jax.default_backend() == "cpu" else jnp.dtype(dtype)


MATMUL = "matmul"
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
