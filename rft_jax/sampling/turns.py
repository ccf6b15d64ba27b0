"""Multi-turn decoding that resumes on its KV cache: the policy writes a turn, the host answers, decoding goes on.

An agent episode alternates policy turns with tool results. Prefilling the
whole conversation again after every tool call would redo the prompt and every
earlier turn; here the cache survives between calls. `begin_turns` prefills
the prompts once; each `run_turn` first feeds each row its tool tokens (read,
not sampled: source TOOL, log-prob 0) and then samples until that row writes an
end-of-turn token or reaches its token budget. The host parses the turns, runs
the tools and calls `run_turn` again with the results as the next feed.

The G rows of a prompt diverge freely: rows share cache slots in lock step
(slot = loop step), and a row that waits while others decode leaves its slots
unmarked, so it never attends to them; its position counts only its own
tokens (`positions_BxG`), so the cache equals a prefill of its conversation.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rft_jax.model.config import ModelConfig
from rft_jax.model.decode import (
    branch_decode_step,
    decode_layout,
    decode_logits,
    decode_rope,
    decode_weights,
    empty_decode_cache,
)
from rft_jax.sampling.prefill import prefill
from rft_jax.sampling.processors import SamplingParams, draw

NONE, POLICY, TOOL = 0, 1, 2  # what a cache slot of a row holds (`source_BxGxS`)


class TurnState(NamedTuple):
    """Everything that survives between turns. S cache slots per row, shared in lock step."""

    prefix: list  # per-layer prompt keys/values (`decode_layout`)
    prefix_mask_BxP: jax.Array
    cache: list  # per-layer branch cache over the S slots
    step: jax.Array  # the next free slot
    key: jax.Array
    next_BxG: jax.Array  # the token the policy drew from its last logits, written if the row samples next
    next_lp_BxG: jax.Array
    tokens_BxGxS: jax.Array  # int32, what each row wrote into each slot (pad where it idled)
    logprobs_BxGxS: jax.Array  # float32 behaviour log-probs of the POLICY slots (0 elsewhere)
    source_BxGxS: jax.Array  # int8: NONE (idle), POLICY or TOOL
    length_BxG: jax.Array  # int32: the row's completion tokens so far (its next token's position offset)


@functools.partial(jax.jit, static_argnames=("cfg", "params_sampling", "num_samples", "slots", "dtype", "lora_scale",
                                             "prefill_rows", "pad_id"))
def begin_turns(params: dict, cfg: ModelConfig, prompt_BxP: jax.Array, prompt_mask_BxP: jax.Array, key: jax.Array, *,
                params_sampling: SamplingParams, num_samples: int, slots: int, pad_id: int,
                lora: dict | None = None, lora_scale: float = 1.0, dtype=jnp.float32,
                shared_1xS: jax.Array | None = None, prefill_rows: int | None = None) -> TurnState:
    """Prefills B left-padded prompts (with `shared_1xS` run once, as `sample` does) and draws each row's
    first token."""
    b, g = prompt_BxP.shape[0], num_samples
    last_BxD, prefix_kv, prefix_mask = prefill(params, cfg, prompt_BxP, prompt_mask_BxP, shared_1xS=shared_1xS,
                                               lora=lora, lora_scale=lora_scale, dtype=dtype, rows=prefill_rows)
    weights = decode_weights(params, cfg, lora, dtype)
    logits = jnp.broadcast_to(decode_logits(weights["head"], cfg, last_BxD, dtype)[:, None], (b, g, cfg.vocab_size))
    key, sub = jax.random.split(key)
    tok0, lp0 = draw(sub, logits, params_sampling)
    return TurnState(prefix=decode_layout(prefix_kv, dtype), prefix_mask_BxP=prefix_mask,
                     cache=empty_decode_cache(cfg, b, g, slots, dtype), step=jnp.int32(0), key=key,
                     next_BxG=tok0.astype(jnp.int32), next_lp_BxG=lp0,
                     tokens_BxGxS=jnp.full((b, g, slots), pad_id, jnp.int32),
                     logprobs_BxGxS=jnp.zeros((b, g, slots), jnp.float32),
                     source_BxGxS=jnp.zeros((b, g, slots), jnp.int8), length_BxG=jnp.zeros((b, g), jnp.int32))


@functools.partial(jax.jit, static_argnames=("cfg", "params_sampling", "eos_ids", "pad_id", "budget", "dtype",
                                             "lora_scale"), donate_argnames=("state",))
def run_turn(params: dict, cfg: ModelConfig, state: TurnState, feed_BxGxF: jax.Array, feed_len_BxG: jax.Array,
             live_BxG: jax.Array, *, params_sampling: SamplingParams, eos_ids: tuple[int, ...], pad_id: int,
             budget: int, lora: dict | None = None, lora_scale: float = 1.0, dtype=jnp.float32
             ) -> tuple[TurnState, jax.Array]:
    """One turn of every `live` row: its feed (tool tokens), then sampled tokens through an end-of-turn token.

    A row stops when it writes one of `eos_ids` (it ended its turn; the token is
    kept, with its loss), when it has written `budget` completion tokens, or
    when the S slots run out. Returns the new state and, per row, whether it
    ended its turn (else it ran out of budget or slots).
    """
    b, g = live_BxG.shape
    s_total = state.tokens_BxGxS.shape[2]
    weights = decode_weights(params, cfg, lora, dtype)
    rope = decode_rope(cfg, state.prefix_mask_BxP, s_total)
    eos = jnp.asarray(eos_ids, jnp.int32)
    loop = dict(st=state, fpos=jnp.zeros((b, g), jnp.int32), ended=jnp.zeros((b, g), bool),
                active=live_BxG & (state.length_BxG < budget))

    def cond(c):
        return (c["st"].step < s_total) & jnp.any(c["active"])

    def body(c):
        st, active, fpos = c["st"], c["active"], c["fpos"]
        t = st.step
        feeding = active & (fpos < feed_len_BxG)
        fed = jnp.take_along_axis(feed_BxGxF, jnp.minimum(fpos, feed_BxGxF.shape[2] - 1)[..., None], -1)[..., 0]
        tok = jnp.where(feeding, fed, st.next_BxG)
        tok = jnp.where(active, tok, pad_id)
        lp = jnp.where(active & ~feeding, st.next_lp_BxG, 0.0)
        source = jnp.where(active, jnp.where(feeding, TOOL, POLICY), NONE).astype(jnp.int8)
        write = lambda arr, v: jax.lax.dynamic_update_slice_in_dim(arr, v[..., None], t, axis=2)  # noqa: E731
        tokens, logprobs, sources = write(st.tokens_BxGxS, tok), write(st.logprobs_BxGxS, lp), write(
            st.source_BxGxS, source)
        valid = (sources != NONE).reshape(b * g, s_total)
        h, cache = branch_decode_step(weights, cfg, tok, st.prefix, st.prefix_mask_BxP, t, st.cache, rope,
                                      dtype=dtype, lora_scale=lora_scale, positions_BxG=st.length_BxG,
                                      valid_RxS=valid)
        key, sub = jax.random.split(st.key)
        nxt, nxt_lp = draw(sub, decode_logits(weights["head"], cfg, h, dtype).reshape(b, g, -1), params_sampling)
        length = st.length_BxG + active.astype(jnp.int32)
        ended = c["ended"] | (active & ~feeding & jnp.isin(tok, eos))
        st = st._replace(cache=cache, step=t + 1, key=key, next_BxG=nxt.astype(jnp.int32), next_lp_BxG=nxt_lp,
                         tokens_BxGxS=tokens, logprobs_BxGxS=logprobs, source_BxGxS=sources, length_BxG=length)
        return dict(st=st, fpos=fpos + feeding.astype(jnp.int32), ended=ended,
                    active=active & ~ended & (length < budget))

    out = jax.lax.while_loop(cond, body, loop)
    return out["st"], out["ended"]
