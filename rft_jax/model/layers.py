"""The small building blocks of the decoder: norms, rotary embeddings, projections."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from rft_jax.model.config import ModelConfig, RopeScaling
from rft_jax.model.precision import MATMUL, mixed_einsum, rows_last


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


def rope_tables(positions_xT: jax.Array, cfg: ModelConfig, theta: float | None = None,
                local: bool = False) -> tuple[jax.Array, jax.Array]:
    """cos/sin of shape [..., T, K/2] for integer positions; `local`: Gemma's sliding-window layers, with
    their own base `theta` and no frequency scaling."""
    scaling = RopeScaling() if local else cfg.rope_scaling
    inv_freq, factor = _inverse_frequencies(cfg.head_dim, theta or cfg.rope_theta, scaling)
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


def dense(x_xD: jax.Array, proj: dict, lora: dict | None, lora_scale: float, dtype) -> jax.Array:
    """x @ W (+ b) (+ LoRA: (x @ A) @ B * scale), matmuls in `dtype` with float32 accumulation.

    Leading dims are flattened first, so the weight gradient is one [D, N] @ [N, E] product,
    which `mixed_einsum` runs as a row-major bf16 matmul (see `rows_last`).
    """
    x_NxD = x_xD.reshape(-1, x_xD.shape[-1])
    y = mixed_einsum("nd,de->ne", x_NxD, proj["w"], dtype)
    if "b" in proj:
        y = y + proj["b"].astype(jnp.float32)
    if lora is not None:
        y = y + checkpoint_name(lora_delta(x_NxD, lora["a"], lora["b"], lora_scale, jnp.dtype(dtype)), MATMUL)
    return y.reshape(*x_xD.shape[:-1], y.shape[-1])


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
    db = jnp.matmul(rows_last(xa_NxR), dy_NxE, preferred_element_type=f32)  # [R, N] @ [N, E]
    dxa_NxR = jnp.einsum("ne,re->nr", dy_NxE, b.astype(dtype), preferred_element_type=f32).astype(dtype)
    da = rows_last(jnp.matmul(rows_last(dxa_NxR), x_NxD, preferred_element_type=f32))  # ([R, N] @ [N, D]).T
    dx = jnp.einsum("nr,dr->nd", dxa_NxR, a.astype(dtype), preferred_element_type=f32)
    return dx.reshape(x.shape).astype(x.dtype), da.astype(a.dtype), db.astype(b.dtype)


lora_delta.defvjp(_lora_fwd, _lora_bwd)
