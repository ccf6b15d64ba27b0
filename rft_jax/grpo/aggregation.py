"""How per-token losses [B, C] become one scalar.

Every mode here is linear in the per-token loss, so each is written as a table
of per-token weights w[b, c] (zero on masked tokens) and the loss is
sum(w * loss). The weights depend only on the mask, never on the policy, so they
can be computed once for the whole batch before it is split into micro-batches.

| name                       | weight of token (b, c)     | used by                    |
|----------------------------|----------------------------|----------------------------|
| `token-mean`               | m / Σ_all m                | DAPO, TRL `dapo`, verl default |
| `seq-mean-token-mean`      | m / (|o_b| · #nonempty seqs) | original GRPO            |
| `seq-mean-token-sum-norm`  | m / (L_norm · B)           | Dr.GRPO (constant L_norm)  |

`L_norm` is a constant length (Dr.GRPO uses the generation budget); it must not
depend on the batch, or the length bias that Dr.GRPO removes comes back. The
train step therefore uses `norm_length`, else the generation budget, and refuses
to fall back to the batch's padded width.

Weights are computed over the whole batch, before it is split into micro-batches
(`rft_jax.train.step.batch_gradients`), so token-mean divides by the token count
of the whole batch, as verl and TRL do.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp

WeightFn = Callable[[jnp.ndarray, int], jnp.ndarray]


def token_mean(mask_BxC: jnp.ndarray, norm_len: int) -> jnp.ndarray:
    del norm_len
    mask_BxC = mask_BxC.astype(jnp.float32)
    return mask_BxC / jnp.maximum(jnp.sum(mask_BxC), 1.0)


def seq_mean_token_mean(mask_BxC: jnp.ndarray, norm_len: int) -> jnp.ndarray:
    del norm_len
    mask_BxC = mask_BxC.astype(jnp.float32)
    len_Bx1 = jnp.sum(mask_BxC, axis=1, keepdims=True)
    n_seqs = jnp.sum(len_Bx1 > 0)  # fully masked sequences do not dilute the mean
    return mask_BxC / jnp.maximum(len_Bx1, 1.0) / jnp.maximum(n_seqs, 1)


def seq_mean_token_sum_norm(mask_BxC: jnp.ndarray, norm_len: int) -> jnp.ndarray:
    mask_BxC = mask_BxC.astype(jnp.float32)
    return mask_BxC / (norm_len * mask_BxC.shape[0])


AGGREGATIONS: dict[str, WeightFn] = {
    "token-mean": token_mean,
    "seq-mean-token-mean": seq_mean_token_mean,
    "seq-mean-token-sum-norm": seq_mean_token_sum_norm,
}


def masked_mean(x_BxC: jnp.ndarray, mask_BxC: jnp.ndarray) -> jnp.ndarray:
    """Mean over unmasked tokens (0 when there are none); used for token metrics."""
    mask_BxC = mask_BxC.astype(jnp.float32)
    return jnp.sum(x_BxC * mask_BxC) / jnp.maximum(jnp.sum(mask_BxC), 1.0)
