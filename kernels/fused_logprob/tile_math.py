"""The per-tile math shared by xla_chunked.py and pallas_gpu.py.

Everything is written for one [rows, cols] tile of float32 logits z (already
divided by the temperature), so the same jnp code runs inside `lax.scan` and
inside a Triton kernel.

Online statistics over vocabulary blocks, per row:
  m   running max of z,
  s   sum exp(z - m),
  u   sum exp(z - m) * (z - m).
Then lse = m + log s and entropy H = lse - E_p[z] = log s - u / s. Keeping u
relative to m (instead of sum e^z z) avoids cancelling two large numbers.

Gradient of a tile, with p = exp(z - lse) and upstream cotangents g_lp, g_H:
  d logp_t / dz = onehot_t - p
  d H / dz      = -p * (z - E_p[z])          (E_p[z] = lse - H)
so dL/dz = g_lp * (onehot_t - p) - g_H * p * (z - E_p[z]).
Both terms are proportional to the cotangents, so a token with zero cotangent
(a masked token) gets an exactly zero gradient.
"""

from __future__ import annotations

import jax.numpy as jnp

# Finite stand-in for -inf: exp() of it is 0 and 0 * it is 0, never NaN.
NEG_BIG = -1e30


def init_stats(rows: int):
    """(m, s, u) before any block has been seen."""
    m = jnp.full((rows,), NEG_BIG, jnp.float32)
    zero = jnp.zeros((rows,), jnp.float32)
    return m, zero, zero


def update_stats(stats, z_RxC, valid_RxC=None):
    """Folds one tile of logits into the running (m, s, u).

    `valid_RxC` masks padded columns (Pallas tail blocks); those count as
    probability zero.
    """
    m, s, u = stats
    if valid_RxC is not None:
        z_RxC = jnp.where(valid_RxC, z_RxC, NEG_BIG)
    m_new = jnp.maximum(m, jnp.max(z_RxC, axis=-1))
    scale = jnp.exp(m - m_new)
    shifted = z_RxC - m_new[:, None]
    e = jnp.exp(shifted)
    eu = e * shifted
    if valid_RxC is not None:
        eu = jnp.where(valid_RxC, eu, 0.0)
    # Re-centre the old u on the new max: sum e^{z-m'}(z-m') = scale*(u + (m-m')s).
    u = scale * (u + (m - m_new) * s) + jnp.sum(eu, axis=-1)
    s = scale * s + jnp.sum(e, axis=-1)
    return m_new, s, u


def finalize_stats(stats):
    """(lse, entropy) from the final (m, s, u)."""
    m, s, u = stats
    log_s = jnp.log(s)
    return m + log_s, log_s - u / s


def target_logit(z_RxC, cols_C, targets_R):
    """Sum of z where the column is the row's target (0 if not in this tile)."""
    hit = cols_C[None, :] == targets_R[:, None]
    return jnp.sum(jnp.where(hit, z_RxC, 0.0), axis=-1)


def softmax_grad(z_RxC, lse_R, mean_z_R, g_lp_R, g_ent_R):
    """dL/dz without the target's one-hot term: -p * (g_lp + g_H * (z - E_p[z])).

    The one-hot term g_lp * onehot_t touches one column per row; callers add it
    where it is cheapest (in the tile for Pallas, by gather/scatter for XLA).
    """
    p = jnp.exp(z_RxC - lse_R[:, None])
    return -p * (g_lp_R[:, None] + g_ent_R[:, None] * (z_RxC - mean_z_R[:, None]))


def logits_grad(z_RxC, cols_C, targets_R, lse_R, mean_z_R, g_lp_R, g_ent_R, valid_RxC=None):
    """Full dL/dz for one tile (see module docstring); zero on padded columns."""
    onehot = cols_C[None, :] == targets_R[:, None]
    dz = softmax_grad(z_RxC, lse_R, mean_z_R, g_lp_R, g_ent_R) + jnp.where(onehot, g_lp_R[:, None], 0.0)
    if valid_RxC is not None:
        dz = jnp.where(valid_RxC, dz, 0.0)
    return dz
