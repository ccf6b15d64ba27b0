"""The jitted KV-cached sampler: prefill each prompt once, decode G continuations.

The prompt's keys/values are computed once and shared by the G samples of its
group (they are only read during decoding); the start all prompts share is run
once for the whole batch (`prefill`). The loop is a `lax.while_loop` that stops
as soon as every sequence has produced an end-of-sequence token. Weights
(fused, adapters beside them) and caches enter the loop as per-layer lists (see
`rft_jax.model.decode`), so a decode step copies nothing but the new token's
keys and values.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from rft_jax.model.config import ModelConfig
from rft_jax.model.decode import (
    branch_decode_step,
    decode_layout,
    decode_logits,
    decode_rope,
    decode_weights,
    empty_decode_cache,
)
from rft_jax.parallel.rules import decode_kv_shardings
from rft_jax.sampling.prefill import prefill
from rft_jax.sampling.processors import SamplingParams, draw


class Rollout(NamedTuple):
    """G sampled continuations of B prompts."""

    tokens_BxGxC: jax.Array  # int32, pad after the end
    logprobs_BxGxC: jax.Array  # float32 log-prob of each token under the sampling policy (0 on padding)
    mask_BxGxC: jax.Array  # bool, True on generated tokens (the EOS token included)
    lengths_BxG: jax.Array  # int32 number of generated tokens
    stopped_BxG: jax.Array  # bool: ended with an EOS (else hit the length limit)
    forced_BxGxC: jax.Array  # bool, True on tokens the sampler wrote (budget forcing), not the policy


class BudgetForcing(NamedTuple):
    """Reasoning mode's think budget, enforced token by token inside the decode loop.

    A sequence thinks until it writes one of `close_variants` (the closing
    tag as its tokenizer may split it) itself or has written
    `think_budget` tokens; at the budget the sampler writes `forced_ids` (the
    closing tag and a cue) in place of sampled tokens, with log-prob 0 and the
    forced flag, and the model reads them as it reads its own. Then it answers
    for at most `answer_budget` tokens (forced ones included). Forcing on the
    device keeps the whole batch in one compiled loop: stopping on the host to
    append the tag would cost a round trip and a new prefill per sequence.
    """

    think_budget: int
    answer_budget: int
    forced_ids: tuple[int, ...]
    close_variants: tuple[tuple[int, ...], ...]


def _constrain_kv(kv_layers: list, mesh: Mesh | None, *, prefix: bool) -> list:
    """Pins the decode KV layouts to the sharding table's layout on a mesh (no-op without one)."""
    if mesh is None:
        return kv_layers
    return jax.lax.with_sharding_constraint(kv_layers, decode_kv_shardings(kv_layers, mesh, prefix=prefix))


@functools.partial(jax.jit, static_argnames=("cfg", "params_sampling", "num_samples", "max_new_tokens", "dtype",
                                             "eos_ids", "pad_id", "lora_scale", "mesh", "prefill_rows",
                                             "forcing"))
def sample(params: dict, cfg: ModelConfig, prompt_BxP: jax.Array, prompt_mask_BxP: jax.Array, key: jax.Array, *,
           params_sampling: SamplingParams, num_samples: int, max_new_tokens: int, eos_ids: tuple[int, ...],
           pad_id: int, lora: dict | None = None, lora_scale: float = 1.0, dtype=jnp.float32,
           mesh: Mesh | None = None, shared_1xS: jax.Array | None = None, prefill_rows: int | None = None,
           forcing: BudgetForcing | None = None) -> Rollout:
    """Samples `num_samples` continuations of each left-padded prompt.

    With `shared_1xS`, row b's prompt is `shared ++ prompt_b` and the shared
    tokens are run once for the batch (`split_shared_prefix` finds them). With
    a `mesh`, the prompt keys/values and the branch cache are sharded by the
    table in `rft_jax.parallel.rules` (prompts on the batch axes, KV heads on
    `tensor`) rather than left to the compiler. `prefill_rows` (with
    `shared_1xS`; `sampler_prompts` chooses it) packs the prompts' own tokens
    into that many rows for the prefill's projections and MLP. `forcing`:
    reasoning mode's think budget (`BudgetForcing`); its two budgets must fit
    in `max_new_tokens`.
    """
    b, g, c = prompt_BxP.shape[0], num_samples, max_new_tokens
    if forcing is not None and forcing.think_budget + forcing.answer_budget > c:
        raise ValueError(f"think_budget {forcing.think_budget} + answer_budget {forcing.answer_budget} exceed "
                         f"max_new_tokens {c}")
    if prefill_rows is not None and shared_1xS is None:
        raise ValueError("prefill_rows packs the prompts' own parts after a shared start: pass shared_1xS too")
    last_BxD, prefix_kv, prefix_mask = prefill(params, cfg, prompt_BxP, prompt_mask_BxP, shared_1xS=shared_1xS,
                                               lora=lora, lora_scale=lora_scale, dtype=dtype, rows=prefill_rows)
    weights = decode_weights(params, cfg, lora, dtype)
    first_logits_BxV = decode_logits(weights["head"], cfg, last_BxD, dtype)
    key, sub = jax.random.split(key)
    first_logits = jnp.broadcast_to(first_logits_BxV[:, None], (b, g, cfg.vocab_size))
    tok0, lp0 = draw(sub, first_logits, params_sampling)
    eos = jnp.asarray(eos_ids, jnp.int32)

    prefix_layers = _constrain_kv(decode_layout(prefix_kv, dtype), mesh, prefix=True)
    rope = decode_rope(cfg, prefix_mask, c)
    state = dict(
        step=jnp.int32(0),
        key=key,
        cache=_constrain_kv(empty_decode_cache(cfg, b, g, c, dtype), mesh, prefix=False),
        current=tok0.astype(jnp.int32),
        current_lp=lp0,
        tokens=jnp.full((b, g, c), pad_id, jnp.int32),
        logprobs=jnp.zeros((b, g, c), jnp.float32),
        done=jnp.zeros((b, g), bool),
        stopped=jnp.zeros((b, g), bool),
        lengths=jnp.zeros((b, g), jnp.int32),
        forced=jnp.zeros((b, g, c), bool),
    )
    if forcing is not None:
        state.update(
            think=jnp.zeros((b, g), jnp.int32),  # thinking tokens written
            answer=jnp.zeros((b, g), jnp.int32),  # tokens written after the thinking (forced ones included)
            phase=jnp.zeros((b, g), jnp.int32),  # _THINKING, _FORCING or _ANSWERING
            fpos=jnp.zeros((b, g), jnp.int32),  # the next forced token
            tail=jnp.full((b, g, max(map(len, forcing.close_variants))), -1, jnp.int32),  # the last tokens written
        )

    def cond(s):
        return (s["step"] < c) & ~jnp.all(s["done"])

    def body(s):
        t = s["step"]
        alive = ~s["done"]
        current, current_lp, is_forced = s["current"], s["current_lp"], jnp.zeros((b, g), bool)
        budget = {}
        if forcing is not None:
            current, current_lp, is_forced, budget = _force(s, forcing, alive)
        tok = jnp.where(alive, current, pad_id)
        tokens = jax.lax.dynamic_update_slice_in_dim(s["tokens"], tok[..., None], t, axis=2)
        logprobs = jax.lax.dynamic_update_slice_in_dim(s["logprobs"], jnp.where(alive, current_lp, 0.0)[..., None], t, axis=2)
        forced = jax.lax.dynamic_update_slice_in_dim(s["forced"], (alive & is_forced)[..., None], t, axis=2)
        lengths = s["lengths"] + alive.astype(jnp.int32)
        hit_eos = alive & ~is_forced & jnp.isin(current, eos)
        stopped = s["stopped"] | hit_eos
        done = s["done"] | hit_eos
        if forcing is not None:
            done = done | (alive & (budget["answer"] >= forcing.answer_budget))
        h, cache = branch_decode_step(weights, cfg, tok, prefix_layers, prefix_mask, t, s["cache"], rope,
                                      dtype=dtype, lora_scale=lora_scale)
        cache = _constrain_kv(cache, mesh, prefix=False)
        key, sub = jax.random.split(s["key"])
        nxt, lp = draw(sub, decode_logits(weights["head"], cfg, h, dtype).reshape(b, g, -1), params_sampling)
        return {**s, **budget, "step": t + 1, "key": key, "cache": cache, "current": nxt.astype(jnp.int32),
                "current_lp": lp, "tokens": tokens, "logprobs": logprobs, "done": done, "stopped": stopped,
                "lengths": lengths, "forced": forced}

    s = jax.lax.while_loop(cond, body, state)
    mask = jnp.arange(c)[None, None, :] < s["lengths"][..., None]
    return Rollout(s["tokens"], s["logprobs"], mask, s["lengths"], s["stopped"], s["forced"])


_THINKING, _FORCING, _ANSWERING = 0, 1, 2


def _force(s: dict, forcing: BudgetForcing, alive: jax.Array):
    """This step's token under the think budget: the sampled one, or the next forced one.

    Returns the token, its log-prob (0 when forced), whether it is forced, and
    the updated budget counters. The phase moves thinking -> forcing when the
    think budget is full, forcing -> answering after the last forced token, and
    thinking -> answering when the sampled tokens end with the closing tag.
    """
    forced_ids = jnp.asarray(forcing.forced_ids, jnp.int32)
    width = max(map(len, forcing.close_variants))
    # Variants right-aligned in one [V, width] array; -1 (never a token) where a shorter one has no token.
    variants = jnp.asarray([(-1,) * (width - len(v)) + tuple(v) for v in forcing.close_variants], jnp.int32)
    phase = jnp.where((s["phase"] == _THINKING) & (s["think"] >= forcing.think_budget), _FORCING, s["phase"])
    is_forced = phase == _FORCING
    tok = jnp.where(is_forced, forced_ids[jnp.minimum(s["fpos"], len(forcing.forced_ids) - 1)], s["current"])
    lp = jnp.where(is_forced, 0.0, s["current_lp"])
    step = alive.astype(jnp.int32)
    think = s["think"] + step * (phase == _THINKING)
    answer = s["answer"] + step * (phase != _THINKING)
    fpos = s["fpos"] + step * is_forced
    tail = jnp.where(alive[..., None], jnp.concatenate([s["tail"][..., 1:], tok[..., None]], -1), s["tail"])
    ends = jnp.all((tail[..., None, :] == variants) | (variants < 0), -1).any(-1)  # [B, G]
    closed = (phase == _THINKING) & alive & ends
    phase = jnp.where(is_forced & (fpos >= len(forcing.forced_ids)), _ANSWERING, phase)
    phase = jnp.where(closed, _ANSWERING, phase)
    return tok, lp, is_forced, dict(think=think, answer=answer, phase=phase, fpos=fpos, tail=tail)
