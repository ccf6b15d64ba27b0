"""Per-token log-probs of G completions under the policy, with each prompt run once.

The prompt goes through `sequence_forward` once per group and its keys/values
feed the G completions in `branch_forward`; autodiff carries gradients back
through the shared prompt, so this is exact in both passes. Logits exist only
for completion tokens and only block by block inside the fused kernel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from kernels.fused_logprob.api import token_logprobs_and_entropy
from rft_jax.model.config import ModelConfig
from rft_jax.model.layers import rms_norm
from rft_jax.model.moe import load_balancing_loss, total_stats
from rft_jax.model.precision import storage_dtype
from rft_jax.model.transformer import branch_forward, sequence_forward, unembed_matrix


def completion_logprobs(params: dict, cfg: ModelConfig, prompt_BxP: jax.Array, prompt_mask_BxP: jax.Array,
                        completion_BxGxC: jax.Array, *, lora: dict | None = None, lora_scale: float = 1.0,
                        temperature: float = 1.0, dtype=jnp.float32, remat: bool = True,
                        implementation: str | None = None, completion_mask_BxGxC: jax.Array | None = None,
                        short_completion: int | None = None, mesh: Mesh | None = None,
                        router_loss: bool = False) -> tuple[jax.Array, ...]:
    """(logp_BxGxC, entropy_BxGxC) of each completion token given the prompt and earlier tokens (and, with
    `router_loss`, a third value: the load-balancing loss).

    `short_completion` (with the mask): the shorter half of the B*G completions
    ends within that many tokens (`rft_jax.rollout.batch.short_completion_len`).
    The completions are then run as two row batches, each row against its own
    prompt's keys/values: the shorter half that wide, the rest at the full
    width; positions past a row's batch width get log-prob and entropy 0 (they
    are padding). `mesh`: where the inputs live; a Pallas kernel is split over it.

    `router_loss` (mixture-of-experts models): also return the load-balancing loss
    (`moe.load_balancing_loss`) over the tokens this forward routes, padding
    excluded: each prompt counted G times and each completion's tokens but its
    last, as transformers counts the B*G sequences prompt + completion[:-1].
    """
    b, g, c = completion_BxGxC.shape
    kw = dict(lora=lora, lora_scale=lora_scale, dtype=dtype, remat=remat)
    real_BxGxC = jnp.ones((b, g, c), bool) if completion_mask_BxGxC is None else completion_mask_BxGxC
    hidden_prompt, prefix_kv, *prompt_stats = sequence_forward(
        params, cfg, prompt_BxP, prompt_mask_BxP, router_mask=prompt_mask_BxP if router_loss else None, **kw)
    # Only the last prompt position predicts a completion token (the first one).
    last_BxD = hidden_prompt[:, -1]
    if short_completion is None:
        parts = [(completion_BxGxC, None, prompt_mask_BxP, last_BxD, real_BxGxC)]
    else:
        rows_RxC = completion_BxGxC.reshape(b * g, c)
        order_R = jnp.argsort(completion_mask_BxGxC.reshape(b * g, c).sum(-1), stable=True)
        parts = []
        for rows, width in ((order_R[:b * g // 2], short_completion), (order_R[b * g // 2:], c)):
            prompt_of = rows // g  # each row is a "prompt" of one branch
            parts.append((rows_RxC[rows, :width][:, None], prompt_of, prompt_mask_BxP[prompt_of], last_BxD[prompt_of],
                          real_BxGxC.reshape(b * g, c)[rows, :width][:, None]))
    hidden, targets, stats = [], [], []
    for tokens_BxGxC, prompt_of, mask, last, real in parts:
        router_mask = real[:, :, :-1] if router_loss else None  # the tokens the branches run
        branch, _, *part_stats = branch_forward(params, cfg, tokens_BxGxC[:, :, :-1], prefix_kv, mask,
                                                prefix_rows_B=prompt_of, router_mask=router_mask, **kw)
        stats += part_stats
        first = jnp.broadcast_to(last[:, None, None], branch.shape[:2] + (1, cfg.hidden_size))
        hidden.append(jnp.concatenate([first, branch], axis=2).reshape(-1, cfg.hidden_size))
        targets.append(tokens_BxGxC.reshape(-1))
    normed = rms_norm(jnp.concatenate(hidden), params["final_norm"], cfg.rms_norm_eps)
    logp_N, entropy_N = token_logprobs_and_entropy(
        normed.astype(dtype), unembed_matrix(params).astype(storage_dtype(dtype)), jnp.concatenate(targets),
        temperature=temperature, implementation=implementation, mesh=mesh)
    extra = ()
    if router_loss:  # the prompts ran once for their G completions: counted G times
        extra = (load_balancing_loss(total_stats(*prompt_stats, *stats, weights=(g,) + (1,) * len(stats))),)
    if short_completion is None:
        return logp_N.reshape(b, g, c), entropy_N.reshape(b, g, c), *extra
    outs = []
    for values in (logp_N, entropy_N):
        n_short = b * g // 2 * short_completion
        short = jnp.pad(values[:n_short].reshape(-1, short_completion), ((0, 0), (0, c - short_completion)))
        by_sorted_row = jnp.concatenate([short, values[n_short:].reshape(-1, c)])
        outs.append(jnp.zeros((b * g, c), values.dtype).at[order_R].set(by_sorted_row).reshape(b, g, c))
    return outs[0], outs[1], *extra
