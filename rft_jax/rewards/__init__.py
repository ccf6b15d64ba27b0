"""Rewards: the function interface, the registry of built-in graders, composition, and scoring.

    from rft_jax.rewards import build_reward
    scorer = build_reward({"name": "math_answer", "mode": "strict_line"})
    results = scorer.score_batch(examples, completions)   # never raises for a bad sample
"""

from rft_jax.rewards.registry import REWARDS, RewardEntry
from rft_jax.rewards.result import RewardResult
from rft_jax.rewards.scorer import AggregateScorer, FunctionScorer, build_reward
from rft_jax.rewards.spec import RewardSpec, parse_spec

__all__ = ["REWARDS", "AggregateScorer", "FunctionScorer", "RewardEntry", "RewardResult", "RewardSpec",
           "build_reward", "parse_spec"]
