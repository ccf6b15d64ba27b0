"""Fused GRPO loss as a Pallas (Triton) GPU kernel.

One program per `BlockSizes.pallas_block_n` tokens: it loads the six inputs once,
writes d loss / d logp for its tokens, and writes one partial sum per statistic
(a squeezed scalar block); the few partial sums are added up in XLA. The math
is `fused_math.token_value_and_grad`, the same code as the XLA backend.

On CPU it runs only with `interpret=True`, which is how the tests check its
values; a test also lowers it for CUDA to check that Triton accepts it. It has
not yet run on a real GPU: none was available when it was written.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from kernels.grpo_loss.block_sizes import BlockSizes
from kernels.grpo_loss.fused_math import SUM_NAMES, pad_to_multiple, token_value_and_grad, with_analytic_vjp
from kernels.grpo_loss.params import LossParams


def _kernel(cfg: LossParams, has_ref: bool, *refs):
    n_in = 6 if has_ref else 5
    ins, (grad_ref, *sum_refs) = refs[:n_in], refs[n_in:]
    logp, old, adv, weight, valid, *ref = (r[...] for r in ins)
    contrib, grad = token_value_and_grad(logp, old, adv, weight, valid, ref[0] if ref else None, cfg)
    grad_ref[...] = grad.astype(grad_ref.dtype)
    for out, c in zip(sum_refs, contrib):
        out[...] = jnp.sum(c)


def _forward(logp_N, old_N, adv_N, weight_N, valid_N, ref_N, cfg, block: BlockSizes, interpret: bool):
    n, bn = logp_N.shape[0], block.pallas_block_n
    inputs = [logp_N, old_N, adv_N, weight_N, valid_N] + ([] if ref_N is None else [ref_N])
    inputs = [pad_to_multiple(x, bn) for x in inputs]
    n_blocks = inputs[0].shape[0] // bn
    tokens = pl.BlockSpec((bn,), lambda i: (i,))
    scalar = pl.BlockSpec((pl.squeezed,), lambda i: (i,))
    outs = pl.pallas_call(
        lambda *refs: _kernel(cfg, ref_N is not None, *refs),
        grid=(n_blocks,),
        in_specs=[tokens] * len(inputs),
        out_specs=[tokens] + [scalar] * len(SUM_NAMES),
        out_shape=[jax.ShapeDtypeStruct(inputs[0].shape, logp_N.dtype)]
        + [jax.ShapeDtypeStruct((n_blocks,), jnp.float32)] * len(SUM_NAMES),
        interpret=interpret,
        compiler_params=plt.CompilerParams(num_warps=4, num_stages=1),  # Triton, not Mosaic GPU
        name="grpo_loss_fwd",
    )(*inputs)
    grad_N, partials = outs[0], outs[1:]
    return jnp.stack([jnp.sum(p) for p in partials]), grad_N[:n]


_compiled = with_analytic_vjp(lambda *a: _forward(*a, interpret=False))
_interpreted = with_analytic_vjp(lambda *a: _forward(*a, interpret=True))


def grpo_token_loss(logp_N, old_N, adv_N, weight_N, valid_N, ref_N, cfg, block, *, interpret: bool = False):
    """(loss, sums) over flat tokens [N]; differentiable w.r.t. logp_N only."""
    fn = _interpreted if interpret else _compiled
    return fn(logp_N, old_N, adv_N, weight_N, valid_N, ref_N, cfg, block)
