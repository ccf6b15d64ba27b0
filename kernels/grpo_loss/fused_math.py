"""Per-token value AND analytic d/d logp of the GRPO objective, shared by the fused backends.

The values come from `reference.token_terms` (the oracle's own math); only the
derivatives are written here. With r = exp(logp - old_logp):

    d pg / d logp = 0 where the clip is active, else -A·r
    d kl / d logp = 1 (k1),  -x (k2),  1 - eˣ (k3),   x = ref_logp - logp

Everything is elementwise jnp, so the same code runs inside a Pallas kernel.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from kernels.grpo_loss.params import LossParams
from kernels.grpo_loss.reference import token_terms

KL_GRADS = {
    "k1": lambda x: jnp.ones_like(x),
    "k2": lambda x: -x,
    "k3": lambda x: 1.0 - jnp.exp(x),
}

# Order of the partial sums each backend returns.
SUM_NAMES = ("loss", "pg", "kl", "clipped", "ppo_kl")


def token_value_and_grad(logp, old_logp, adv, weight, valid_f, ref_logp, cfg: LossParams):
    """(per-token contributions to each of SUM_NAMES, d loss / d logp), all f32.

    Inputs are any-shape float arrays; `valid_f` is the 0/1 token mask as floats,
    `weight` the aggregation weight (see reference.AGGREGATIONS).
    """
    f32 = lambda x: x.astype(jnp.float32)  # noqa: E731
    logp, old_logp, adv, weight, valid_f = map(f32, (logp, old_logp, adv, weight, valid_f))
    valid = valid_f != 0.0
    pg, clipped, kl = token_terms(logp, old_logp, adv, valid, cfg, None if ref_logp is None else f32(ref_logp))

    ratio = jnp.exp(jnp.where(valid, logp - old_logp, 0.0))
    dtoken = jnp.where(clipped, 0.0, -adv * ratio)
    kl_w = jnp.zeros_like(pg)
    if kl is not None:
        dtoken = dtoken + cfg.beta * KL_GRADS[cfg.kl_estimator](jnp.where(valid, f32(ref_logp) - logp, 0.0))
        kl_w = weight * kl
    pg_w = weight * pg
    contrib = (
        pg_w + cfg.beta * kl_w,
        pg_w,
        kl_w,
        valid_f * clipped.astype(jnp.float32),
        jnp.where(valid, old_logp - logp, 0.0),
    )
    return contrib, weight * dtoken


def pad_to_multiple(x_N, multiple: int):
    """Zero-pad a flat array; padded tokens have weight 0 and mask 0, so they add nothing."""
    pad = -x_N.shape[0] % multiple
    return jnp.pad(x_N, (0, pad)) if pad else x_N


def with_analytic_vjp(forward):
    """Make `forward(logp, old, adv, w, valid, ref|None, cfg, block) -> (sums_5, grad_N)` differentiable.

    The returned function gives (loss, sums dict); its VJP is cotangent·grad_N for
    `logp` and zero for every other input. Only the loss is differentiable: the
    wrapper in api.py stop-gradients the other inputs and the metric sums.
    """

    @functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
    def fused(logp, old, adv, weight, valid, ref, cfg, block):
        return forward(logp, old, adv, weight, valid, ref, cfg, block)[0]

    def fused_fwd(logp, old, adv, weight, valid, ref, cfg, block):
        sums, grad = forward(logp, old, adv, weight, valid, ref, cfg, block)
        return sums, (grad, None if ref is None else jnp.zeros((), jnp.float32))

    def fused_bwd(cfg, block, res, sums_bar):
        grad, ref_marker = res
        zeros = jnp.zeros(grad.shape, jnp.float32)
        dlogp = (sums_bar[0] * grad.astype(jnp.float32)).astype(grad.dtype)
        return dlogp, zeros, zeros, zeros, zeros, (None if ref_marker is None else zeros)

    fused.defvjp(fused_fwd, fused_bwd)

    def call(logp, old, adv, weight, valid, ref, cfg, block):
        sums = fused(logp, old, adv, weight, valid, ref, cfg, block)
        named = dict(zip(SUM_NAMES, jax.lax.stop_gradient(sums)))
        return sums[0], named

    return call
