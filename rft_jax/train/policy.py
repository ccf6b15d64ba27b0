"""Per-token log-probs of G completions under the policy, with each prompt run once.

The prompt goes through `sequence_forward` once per group and its keys/values
feed the G completions in `branch_forward`; autodiff carries gradients back
through the shared prompt, so this is exact in both passes. Logits exist only
for completion tokens and only block by block inside the fused kernel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kernels.fused_logprob.api import token_logprobs_and_entropy
from rft_jax.model.config import ModelConfig
from rft_jax.model.layers import rms_norm, storage_dtype
from rft_jax.model.transformer import branch_forward, sequence_forward, unembed_matrix


def completion_logprobs(params: dict, cfg: ModelConfig, prompt_BxP: jax.Array, prompt_mask_BxP: jax.Array,
                        completion_BxGxC: jax.Array, *, lora: dict | None = None, lora_scale: float = 1.0,
                        temperature: float = 1.0, dtype=jnp.float32, remat: bool = True,
                        implementation: str | None = None) -> tuple[jax.Array, jax.Array]:
    """(logp_BxGxC, entropy_BxGxC) of each completion token given the prompt and earlier tokens."""
    hidden_prompt, prefix_kv = sequence_forward(params, cfg, prompt_BxP, prompt_mask_BxP, lora=lora,
                                                lora_scale=lora_scale, dtype=dtype, remat=remat)
    b, g, c = completion_BxGxC.shape
    # Only the last prompt position predicts a completion token (the first one).
    last_BxGx1xD = jnp.broadcast_to(hidden_prompt[:, -1][:, None, None], (b, g, 1, cfg.hidden_size))
    hidden_branch, _ = branch_forward(params, cfg, completion_BxGxC[:, :, :-1], prefix_kv, prompt_mask_BxP,
                                      lora=lora, lora_scale=lora_scale, dtype=dtype, remat=remat)
    hidden_BxGxCxD = jnp.concatenate([last_BxGx1xD, hidden_branch], axis=2)
    normed = rms_norm(hidden_BxGxCxD, params["final_norm"], cfg.rms_norm_eps)
    n = b * g * c
    logp_N, entropy_N = token_logprobs_and_entropy(
        normed.reshape(n, cfg.hidden_size).astype(dtype), unembed_matrix(params).astype(storage_dtype(dtype)),
        completion_BxGxC.reshape(n), temperature=temperature, implementation=implementation)
    return logp_N.reshape(b, g, c), entropy_N.reshape(b, g, c)
