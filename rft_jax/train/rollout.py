"""Rollouts: sample G completions per prompt, score them, turn scores into advantages."""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from rft_jax.grpo import group_advantages, overlong_penalty, zero_variance_groups
from rft_jax.model.config import ModelConfig
from rft_jax.sampling import SamplingParams, decode_rollout, generate_ids
from rft_jax.train.step import RolloutBatch


@dataclasses.dataclass
class ScoredRollouts:
    """Sampled completions of B prompts with their rewards (host numpy arrays)."""

    prompt_BxP: np.ndarray
    prompt_mask_BxP: np.ndarray
    tokens_BxGxC: np.ndarray
    mask_BxGxC: np.ndarray
    logprobs_BxGxC: np.ndarray
    lengths_BxG: np.ndarray
    truncated_BxG: np.ndarray
    texts: list[list[str]]
    rewards_BxG: np.ndarray
    components: dict[str, np.ndarray]  # name -> [B, G]
    errors_BxG: np.ndarray
    timing: dict[str, float]


def prompt_ids(tokenizer, examples) -> list[list[int]]:
    return [tokenizer.apply_chat_template(ex.prompt_messages, tools=ex.tools) for ex in examples]


def sample_and_score(params: dict, cfg: ModelConfig, tokenizer, scorer, examples, key: jax.Array, *,
                     sampling: SamplingParams, num_samples: int, max_new_tokens: int, lora=None,
                     lora_scale: float = 1.0, dtype=jnp.float32, stops: tuple[str, ...] = (),
                     ids: list[list[int]] | None = None) -> ScoredRollouts:
    t0 = time.perf_counter()
    ids = ids if ids is not None else prompt_ids(tokenizer, examples)
    rollout, ptoks, pmask = generate_ids(params, cfg, ids, key, sampling=sampling, num_samples=num_samples,
                                         max_new_tokens=max_new_tokens, eos_ids=tokenizer.eos_ids,
                                         pad_id=tokenizer.pad_id, lora=lora, lora_scale=lora_scale, dtype=dtype)
    completions = decode_rollout(tokenizer, rollout, stops)
    t1 = time.perf_counter()
    texts = [[c.text for c in row] for row in completions]
    flat_examples = [ex for ex in examples for _ in range(num_samples)]
    results = scorer.score_batch(flat_examples, [t for row in texts for t in row])
    b, g = len(examples), num_samples
    rewards = np.array([r.score for r in results], np.float32).reshape(b, g)
    names = sorted({k for r in results for k in r.components})
    components = {k: np.array([r.components.get(k, np.nan) for r in results], np.float32).reshape(b, g)
                  for k in names}
    errors = np.array([r.error is not None for r in results]).reshape(b, g)
    truncated = np.array([[c.finish_reason == "length" for c in row] for row in completions])
    return ScoredRollouts(ptoks, pmask, np.asarray(rollout.tokens_BxGxC), np.asarray(rollout.mask_BxGxC),
                          np.asarray(rollout.logprobs_BxGxC), np.asarray(rollout.lengths_BxG), truncated, texts,
                          rewards, components, errors,
                          {"generate": t1 - t0, "reward": time.perf_counter() - t1})


def completion_bucket(longest: int, max_new_tokens: int) -> int:
    """Train on C rounded up to a power-of-two multiple of 16, not the full budget: tokens past every
    sequence's end cost a full forward and backward and teach nothing. Few sizes, few compiles."""
    c = 16
    while c < longest:
        c *= 2
    return min(c, max_new_tokens)


def to_batch(r: ScoredRollouts, *, advantage_mode: str, advantage_eps: float, max_new_tokens: int,
             overlong_buffer_len: int = 0, overlong_factor: float = 1.0) -> tuple[RolloutBatch, np.ndarray]:
    """The device batch for `train_step`, and the (possibly penalised) rewards used for advantages."""
    rewards = r.rewards_BxG
    if overlong_buffer_len > 0:
        rewards = rewards + np.asarray(overlong_penalty(jnp.asarray(r.lengths_BxG), max_new_tokens,
                                                        overlong_buffer_len, overlong_factor))
    adv = np.asarray(group_advantages(jnp.asarray(rewards), advantage_mode, advantage_eps))
    c = completion_bucket(int(r.lengths_BxG.max()), max_new_tokens)
    batch = RolloutBatch(r.prompt_BxP, r.prompt_mask_BxP, r.tokens_BxGxC[..., :c], r.mask_BxGxC[..., :c],
                         r.logprobs_BxGxC[..., :c], adv.astype(np.float32), r.truncated_BxG)
    return jax.tree.map(jnp.asarray, batch), rewards


def short_completion_len(batch: RolloutBatch, microbatches: int = 1) -> int | None:
    """The bucket that holds the shorter half of the completions of every micro-batch, or None when that
    is the full width. Half of the completions usually end well before the longest one, and at the full
    width their padding costs a whole forward and backward (see `completion_logprobs`)."""
    mask = np.asarray(batch.completion_mask_BxGxC)
    c = mask.shape[2]
    lengths = mask.sum(-1).reshape(microbatches, -1)  # micro-batches split the prompts, as in the step
    if lengths.shape[1] < 2:
        return None
    shorter_half = np.sort(lengths, axis=1)[:, lengths.shape[1] // 2 - 1]
    short = completion_bucket(int(shorter_half.max()), c)
    return short if short < c else None


def rollout_metrics(r: ScoredRollouts, adv_BxG: np.ndarray) -> dict[str, float]:
    lengths = r.lengths_BxG.astype(np.float32)
    zero_std = np.asarray(zero_variance_groups(jnp.asarray(r.rewards_BxG)))
    m = {
        "critic/rewards/mean": float(r.rewards_BxG.mean()),
        "critic/rewards/max": float(r.rewards_BxG.max()),
        "critic/rewards/min": float(r.rewards_BxG.min()),
        "critic/advantages/mean": float(adv_BxG.mean()),
        "critic/advantages/max": float(adv_BxG.max()),
        "critic/advantages/min": float(adv_BxG.min()),
        "reward/errors": float(r.errors_BxG.mean()),
        "response_length/mean": float(lengths.mean()),
        "response_length/max": float(lengths.max()),
        "response_length/min": float(lengths.min()),
        "response_length/clip_ratio": float(r.truncated_BxG.mean()),
        "prompt_length/mean": float(r.prompt_mask_BxP.sum(-1).mean()),
        "batch/zero_std_frac": float(zero_std.mean()),
    }
    for name, values in r.components.items():
        m[f"rewards/{name}/mean"] = float(np.nanmean(values)) if np.isfinite(values).any() else 0.0
    return m
