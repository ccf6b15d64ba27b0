"""Prompt prefill, with the part every prompt of the batch shares run once.

Chat prompts start alike: the template's system turn and any fixed
instructions. `split_shared_prefix` finds that common start on the host;
`prefill` runs it once as a batch of one, then runs each prompt's own rest
against its keys/values, exactly as `branch_forward` runs G continuations of
a prompt. The result is the ordinary per-prompt cache the decode loop reads,
[shared | own tokens | padding], with a mask, so decoding needs no special case.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rft_jax.model.config import ModelConfig
from rft_jax.model.precision import concat_bits
from rft_jax.model.transformer import KV, branch_forward, packed_branch_forward, sequence_forward

SHARED_MULTIPLE = 16
PACK_MIN_SLOTS = 2048  # below this many padded prompt slots the prefill is cheap and is not packed
PACK_STEPS = 16  # packed sizes are multiples of 1/16 of the padded size: at most 16 compiled shapes per bucket


def split_shared_prefix(prompts: list[list[int]], multiple: int = SHARED_MULTIPLE) -> int:
    """Length of the start all prompts share, rounded down to `multiple` (few compiled shapes); every
    prompt keeps at least one token of its own (its last one predicts the first new token)."""
    shortest = min(len(p) for p in prompts)
    n = 0
    first = prompts[0]
    while n < shortest - 1 and all(p[n] == first[n] for p in prompts):
        n += 1
    return n // multiple * multiple


def packed_rows(own_tokens: int, padded_slots: int) -> int | None:
    """How many rows the prefill of the prompts' own parts runs on (`packed_branch_forward`), or None
    to run the padded layout: `own_tokens` real tokens out of `padded_slots` (B x P) rounded up to a
    1/PACK_STEPS of it. Small batches are not packed: little to save, and each new size would compile."""
    if padded_slots < PACK_MIN_SLOTS:
        return None
    unit = -(-padded_slots // PACK_STEPS)
    rows = -(-own_tokens // unit) * unit
    return rows if rows < padded_slots else None


def prefill(params: dict, cfg: ModelConfig, prompt_BxP: jax.Array, prompt_mask_BxP: jax.Array, *,
            shared_1xS: jax.Array | None = None, lora: dict | None = None, lora_scale: float = 1.0,
            dtype=jnp.float32, rows: int | None = None) -> tuple[jax.Array, KV, jax.Array]:
    """(hidden of each prompt's last token [B, D], prompt keys/values [L, B, T, J, K], their mask [B, T]).

    Without `shared_1xS` the left-padded prompts run as they are (T = P). With
    it, row b's prompt is `shared ++ prompt_b` (T = S + P): the shared part runs
    once and each rest is moved to the front of its row (right padding), so
    its positions follow the shared part directly. With `rows` as well (from
    `packed_rows`, at least the number of real tokens), the rests run packed.
    """
    kw = dict(lora=lora, lora_scale=lora_scale, dtype=dtype)
    if shared_1xS is None:
        hidden, kv = sequence_forward(params, cfg, prompt_BxP, prompt_mask_BxP, **kw)
        # Left padding: the last position is always the last real token.
        return hidden[:, -1], kv, prompt_mask_BxP.astype(bool)
    b, p = prompt_BxP.shape
    s = shared_1xS.shape[1]
    shared_mask = jnp.ones((1, s), bool)
    _, shared_kv = sequence_forward(params, cfg, shared_1xS, shared_mask, **kw)  # [L, 1, S, J, K]
    lengths_B = prompt_mask_BxP.astype(jnp.int32).sum(-1)
    shift = (jnp.arange(p)[None, :] + (p - lengths_B)[:, None]) % p
    own_BxP = jnp.take_along_axis(prompt_BxP, shift, axis=1)
    last_slot_B = jnp.maximum(lengths_B - 1, 0)
    if rows is None:
        hidden, own_kv = branch_forward(params, cfg, own_BxP[None], shared_kv, shared_mask, **kw)  # [1, B, P, D]
        last_BxD = hidden[0, jnp.arange(b), last_slot_B]
    else:
        own_mask_1xBxP = (jnp.arange(p)[None, :] < lengths_B[:, None])[None]
        hidden_NxD, own_kv, pack = packed_branch_forward(params, cfg, own_BxP[None], own_mask_1xBxP, shared_kv,
                                                         shared_mask, rows=rows, **kw)
        last_BxD = hidden_NxD[pack.slots_BxGxC[0, jnp.arange(b), last_slot_B]]
    kv = KV(*(concat_bits([jnp.broadcast_to(sh, (sh.shape[0], b) + sh.shape[2:]), own[:, 0].astype(sh.dtype)], 2)
              for sh, own in zip(shared_kv, own_kv)))
    mask = jnp.concatenate([jnp.ones((b, s), bool), jnp.arange(p)[None, :] < lengths_B[:, None]], 1)
    return last_BxD, kv, mask
