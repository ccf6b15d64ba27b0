"""Fused GRPO loss in plain jnp: one elementwise pass that produces both the
loss sums and d loss / d logp, so the backward pass is a single multiply.

Tokens are processed in chunks of `BlockSizes.chunk_n` with `lax.map`, which
bounds the f32 temporaries for very large N (B·C in the millions) instead of
materialising a dozen [N] intermediates at once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kernels.grpo_loss.block_sizes import BlockSizes
from kernels.grpo_loss.fused_math import pad_to_multiple, token_value_and_grad, with_analytic_vjp
from kernels.grpo_loss.params import LossParams


def _forward(logp_N, old_N, adv_N, weight_N, valid_N, ref_N, cfg: LossParams, block: BlockSizes):
    n = logp_N.shape[0]
    chunk = max(1, min(block.chunk_n, n))
    inputs = [logp_N, old_N, adv_N, weight_N, valid_N] + ([] if ref_N is None else [ref_N])
    chunks = [pad_to_multiple(x, chunk).reshape(-1, chunk) for x in inputs]

    def one_chunk(xs):
        logp, old, adv, weight, valid, *ref = xs
        contrib, grad = token_value_and_grad(logp, old, adv, weight, valid, ref[0] if ref else None, cfg)
        return jnp.stack([jnp.sum(c) for c in contrib]), grad.astype(logp_N.dtype)

    sums_Mx5, grad_MxK = jax.lax.map(one_chunk, chunks)
    return jnp.sum(sums_Mx5, axis=0), grad_MxK.reshape(-1)[:n]


grpo_token_loss = with_analytic_vjp(_forward)
grpo_token_loss.__doc__ = "(loss, sums) over flat tokens [N]; differentiable w.r.t. logp_N only."
