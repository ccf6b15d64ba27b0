"""Fused GRPO loss: pick a backend, or let `implementation=None` pick the best one.

    loss, metrics = grpo_loss(logp_BxC, old_logp_BxC, advantages_B, mask_BxC, cfg)

is a drop-in for `rft_jax.grpo.grpo_loss` (same arguments, same metrics), whose
per-token pass (ratio, clip, KL, masks, aggregation weights) and its gradient run
fused. Only `logp_BxC` (and `entropy_BxC`) are differentiated; old/ref log-probs
and advantages are constants, as in every GRPO trainer. `cfg` is a `LossParams`
or any object with its fields (rft_jax's `GRPOLossConfig`, say): kernels/ never
imports rft_jax.

An explicitly requested backend that cannot run raises; it never falls back.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kernels.grpo_loss import pallas_gpu, reference, xla_chunked
from kernels.grpo_loss.block_sizes import BlockSizes
from kernels.grpo_loss.params import LossParams
from kernels.grpo_loss.reference import check_inputs, loss_weights

IMPLEMENTATIONS = {
    "reference": reference.grpo_token_loss,
    "xla_chunked": xla_chunked.grpo_token_loss,
    "pallas_gpu": pallas_gpu.grpo_token_loss,
}


def best_implementation() -> str:
    return "pallas_gpu" if jax.default_backend() == "gpu" else "xla_chunked"


def grpo_token_loss(
    logp_N, old_logp_N, adv_N, weight_N, valid_N, ref_logp_N=None, *,
    cfg, implementation: str | None = None, block: BlockSizes = BlockSizes(),
    interpret: bool = False,
):
    """(loss, sums) over flat tokens [N]; `interpret=True` runs the Pallas kernel on CPU."""
    cfg = LossParams.from_config(cfg)
    name = implementation or best_implementation()
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"unknown implementation {name!r}; choose from {sorted(IMPLEMENTATIONS)}")
    if name == "pallas_gpu" and not interpret and jax.default_backend() != "gpu":
        raise RuntimeError(f"implementation='pallas_gpu' needs a GPU (backend is {jax.default_backend()!r}); "
                           "pass interpret=True to emulate it, or choose 'xla_chunked'")
    if interpret and name != "pallas_gpu":
        raise ValueError("interpret=True only applies to implementation='pallas_gpu'")
    const = lambda x: None if x is None else jax.lax.stop_gradient(x.astype(jnp.float32))  # noqa: E731
    args = (logp_N, const(old_logp_N), const(adv_N), const(weight_N), const(valid_N), const(ref_logp_N), cfg, block)
    if name == "pallas_gpu":
        return pallas_gpu.grpo_token_loss(*args, interpret=interpret)
    return IMPLEMENTATIONS[name](*args)


def grpo_loss(
    logp_BxC, old_logp_BxC, advantages_B, mask_BxC, cfg, *,
    ref_logp_BxC=None, entropy_BxC=None, truncated_B=None,
    implementation: str | None = None, block: BlockSizes = BlockSizes(), interpret: bool = False,
):
    """Same contract as `rft_jax.grpo.grpo_loss`, computed by the chosen fused backend."""
    cfg = LossParams.from_config(cfg)
    check_inputs(cfg, ref_logp_BxC, entropy_BxC)
    valid_BxC, weight_BxC = loss_weights(mask_BxC, cfg, truncated_B)
    flat = lambda x: None if x is None else x.reshape(-1)  # noqa: E731
    adv_BxC = jnp.broadcast_to(advantages_B[:, None], logp_BxC.shape)
    loss, sums = grpo_token_loss(
        flat(logp_BxC), flat(old_logp_BxC), flat(adv_BxC), flat(weight_BxC), flat(valid_BxC),
        flat(ref_logp_BxC), cfg=cfg, implementation=implementation, block=block, interpret=interpret,
    )
    n_valid = jnp.maximum(jnp.sum(valid_BxC), 1).astype(jnp.float32)
    metrics = {
        "actor/pg_loss": sums["pg"],
        "actor/pg_clipfrac": sums["clipped"] / n_valid,
        "actor/ppo_kl": sums["ppo_kl"] / n_valid,
    }
    if ref_logp_BxC is not None:
        metrics["actor/kl_loss"] = sums["kl"]
    if entropy_BxC is not None:
        entropy = jnp.sum(jnp.where(valid_BxC, weight_BxC * entropy_BxC.astype(jnp.float32), 0.0))
        loss = loss - cfg.entropy_coef * entropy
        metrics["actor/entropy"] = entropy
    return loss, metrics
