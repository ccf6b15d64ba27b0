"""Groups of episodes -> the arrays one train step reads (layout: docs/DESIGN.md, "Episodes as arrays")."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rft_jax.grpo import AdvantageConfig, group_advantages, overlong_penalty
from rft_jax.rollout.episode import Episode
from rft_jax.sampling.generate import bucket, left_pad


class RolloutBatch(NamedTuple):
    """What one step learns from: B prompts with G completions each.

    A completion is everything after the prompt (policy, tool and forced
    tokens); the model reads all of it, and only `loss_mask` tokens carry a loss.
    """

    prompt_BxP: jax.Array  # int32, left-padded to a bucket
    prompt_mask_BxP: jax.Array
    completion_BxGxC: jax.Array  # int32, right-padded
    completion_mask_BxGxC: jax.Array  # bool: a real token (any source)
    old_logp_BxGxC: jax.Array  # behaviour log-probs of the policy tokens (0 elsewhere), or the proximal ones (mu > 1)
    advantages_BxG: jax.Array
    truncated_BxG: jax.Array
    loss_mask_BxGxC: jax.Array | None = None  # bool: sampled by the policy (None: every real token)
    behaviour_logp_BxGxC: jax.Array | None = None  # the sampler's, when old_logp holds recomputed proximal ones

    def with_loss_mask(self) -> RolloutBatch:
        """The same batch with `loss_mask` and `behaviour_logp` filled in (a jitted step needs one fixed
        structure): every real token, and the old log-probs, which are the sampler's until recomputed."""
        filled = self
        if filled.loss_mask_BxGxC is None:
            filled = filled._replace(loss_mask_BxGxC=filled.completion_mask_BxGxC)
        if filled.behaviour_logp_BxGxC is None:
            filled = filled._replace(behaviour_logp_BxGxC=filled.old_logp_BxGxC)
        return filled


def completion_bucket(longest: int, max_tokens: int) -> int:
    """Train on C rounded up to a power-of-two multiple of 16, not the full budget: tokens past every
    sequence's end cost a full forward and backward and teach nothing. Few sizes, few compiles."""
    c = 16
    while c < longest:
        c *= 2
    return min(c, max_tokens)


def shaped_rewards(groups: list[list[Episode]], cfg: AdvantageConfig, max_new_tokens: int) -> np.ndarray:
    """[B, G] episode rewards after reward shaping (DAPO's soft overlong penalty when configured)."""
    rewards = np.array([[e.reward for e in group] for group in groups], np.float32)
    if cfg.overlong_buffer_len > 0:
        lengths = np.array([[e.num_policy_tokens for e in group] for group in groups], np.int32)
        rewards = rewards + np.asarray(overlong_penalty(jnp.asarray(lengths), max_new_tokens,
                                                        cfg.overlong_buffer_len, cfg.overlong_penalty_factor))
    return rewards


def advantages(groups: list[list[Episode]], cfg: AdvantageConfig, max_new_tokens: int) -> np.ndarray:
    """[B, G] group-relative advantages of the shaped rewards."""
    rewards = shaped_rewards(groups, cfg, max_new_tokens)
    return np.asarray(group_advantages(jnp.asarray(rewards), cfg.estimator, cfg.eps), np.float32)


def pack_groups(groups: list[list[Episode]], advantages_BxG: np.ndarray, *, pad_id: int,
                max_completion_tokens: int, active_B: np.ndarray | None = None) -> RolloutBatch:
    """B groups of G episodes (each group shares one prompt) as device arrays.

    Prompts are left-padded to a prompt bucket, completions right-padded to a
    completion bucket of the longest one (at most `max_completion_tokens`).
    Groups with `active_B` False (fillers that keep the batch's shape, see
    dynamic.py) get an empty loss mask: the model reads them, the loss ignores them.
    """
    b, g = len(groups), len(groups[0])
    if any(len(group) != g for group in groups):
        raise ValueError(f"every group needs {g} episodes, got {[len(group) for group in groups]}")
    prompts = [group[0].prompt_ids.tolist() for group in groups]
    prompt_BxP, prompt_mask_BxP = left_pad(prompts, bucket(max(len(p) for p in prompts)), pad_id, b)
    longest = max(len(e.completion_ids) for group in groups for e in group)
    if longest > max_completion_tokens:
        raise ValueError(f"an episode has {longest} completion tokens, more than the {max_completion_tokens} budget")
    c = completion_bucket(longest, max_completion_tokens)
    tokens = np.full((b, g, c), pad_id, np.int32)
    real = np.zeros((b, g, c), bool)
    loss = np.zeros((b, g, c), bool)
    old_logp = np.zeros((b, g, c), np.float32)
    for i, group in enumerate(groups):
        for j, e in enumerate(group):
            n = len(e.completion_ids)
            tokens[i, j, :n], real[i, j, :n] = e.completion_ids, True
            loss[i, j, :n], old_logp[i, j, :n] = e.loss_mask, e.behaviour_logprobs
    if active_B is not None:
        loss &= np.asarray(active_B, bool)[:, None, None]
    truncated = np.array([[e.truncated for e in group] for group in groups])
    batch = RolloutBatch(prompt_BxP, prompt_mask_BxP, tokens, real, old_logp,
                         np.asarray(advantages_BxG, np.float32), truncated, loss)
    return jax.tree.map(jnp.asarray, batch)


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
