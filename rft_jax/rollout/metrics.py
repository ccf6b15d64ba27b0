"""What a step's rollouts say about the policy, under verl's metric names so dashboards carry over."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from rft_jax.grpo import zero_variance_groups
from rft_jax.rollout.engine import Rollouts


def rollout_metrics(r: Rollouts, adv_BxG: np.ndarray, shaped_BxG: np.ndarray | None = None) -> dict[str, float]:
    """`shaped_BxG`: the rewards the advantages were computed from (`rft_jax.rollout.batch.shaped_rewards`);
    a group without signal (`batch/zero_std_frac`) is one whose shaped rewards are all equal."""
    rewards = r.rewards_BxG
    lengths = r.lengths_BxG.astype(np.float32)
    zero_std = np.asarray(zero_variance_groups(jnp.asarray(rewards if shaped_BxG is None else shaped_BxG)))
    m = {
        "critic/rewards/mean": float(rewards.mean()),
        "critic/rewards/max": float(rewards.max()),
        "critic/rewards/min": float(rewards.min()),
        "critic/advantages/mean": float(adv_BxG.mean()),
        "critic/advantages/max": float(adv_BxG.max()),
        "critic/advantages/min": float(adv_BxG.min()),
        "reward/errors": float(r.errors_BxG.mean()),
        "response_length/mean": float(lengths.mean()),
        "response_length/max": float(lengths.max()),
        "response_length/min": float(lengths.min()),
        "response_length/clip_ratio": float(r.truncated_BxG.mean()),
        "prompt_length/mean": float(r.prompt_lengths_B.mean()),
        "batch/zero_std_frac": float(zero_std.mean()),
    }
    for name, values in r.components.items():
        m[f"rewards/{name}/mean"] = float(np.nanmean(values)) if np.isfinite(values).any() else 0.0
    episodes = [e for group in r.groups for e in group]
    return {**m, **reasoning_metrics(episodes), **agent_metrics(episodes)}


def agent_metrics(episodes: list) -> dict[str, float]:
    """Multi-turn episodes: turns, tool calls and errors per episode, environment seconds, and the share that
    finished with a final answer (not cut by the turn cap or the token budget). Empty for single-turn runs."""
    agentic = [e for e in episodes if e.multi_turn]
    if not agentic:
        return {}
    mean = lambda f: float(np.mean([f(e) for e in agentic]))  # noqa: E731
    return {"agent/turns/mean": mean(lambda e: e.turns),
            "agent/turns/max": float(max(e.turns for e in agentic)),
            "agent/tool_calls/mean": mean(lambda e: e.tool_calls),
            "agent/tool_call_rate": mean(lambda e: e.tool_calls > 0),
            "agent/tool_errors/mean": mean(lambda e: e.tool_errors),
            "agent/env_seconds/mean": mean(lambda e: e.env_seconds),
            "agent/finished_rate": mean(lambda e: e.finish_reason == "stop"),
            "agent/turn_cap_rate": mean(lambda e: e.finish_reason == "turns"),
            "agent/tool_tokens/mean": mean(lambda e: len(e.completion_ids) - e.num_policy_tokens)}


def reasoning_metrics(episodes: list) -> dict[str, float]:
    """Reasoning mode: think and answer lengths (tokens), how often the budget cut the thinking, and the
    share of episodes with a well-formed answer (the thinking closed). Empty with reasoning off."""
    reasoned = [e for e in episodes if e.thinking is not None]
    if not reasoned:
        return {}
    think = np.array([e.think_tokens for e in reasoned], np.float32)
    answer = np.array([len(e.completion_ids) - e.think_tokens for e in reasoned], np.float32)
    return {"reasoning/think_length/mean": float(think.mean()),
            "reasoning/think_length/max": float(think.max()),
            "reasoning/answer_length/mean": float(answer.mean()),
            "reasoning/budget_hit_rate": float(np.mean([e.budget_hit for e in reasoned])),
            "reasoning/well_formed_rate": float(np.mean([e.well_formed for e in reasoned]))}


def signal_metrics(r: Rollouts, success_threshold: float) -> dict[str, float]:
    """Before training: can the model ever succeed, and do a group's samples disagree?"""
    rewards = r.rewards_BxG
    zero_std = np.asarray(zero_variance_groups(jnp.asarray(rewards)))
    return {"baseline/sampled_reward_mean": float(rewards.mean()),
            "baseline/any_positive_share": float((rewards.max(1) > 0).mean()),
            "baseline/success_share": float((rewards >= success_threshold).mean()),
            "baseline/zero_std_frac": float(zero_std.mean()),
            "baseline/truncation_rate": float(r.truncated_BxG.mean())}
