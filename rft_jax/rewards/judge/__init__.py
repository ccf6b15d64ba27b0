"""Judge rewards: a model scores completions against a rubric (tone, helpfulness, summaries, ...).

    from rft_jax.rewards import build_reward
    scorer = build_reward({"name": "judge", "rubric": "Is the reply polite?",
                           "base_url": "http://127.0.0.1:8000/v1", "model": "smollm2-135m-instruct"})

Backends: a local rft_jax model (KV-cached sampler) or any OpenAI-compatible
endpoint. Modes: pointwise scores, or pairwise preferences within a group.
"""

# rewards first: its registry imports rft_jax.rewards.judge.reward, which must then load in full.
import rft_jax.rewards  # noqa: F401
from rft_jax.rewards.judge.judge import Judge
from rft_jax.rewards.judge.reward import JudgeConfig, judge_reward, judge_reward_batch
from rft_jax.rewards.judge.rubric import Criterion, Rubric, parse_rubric

__all__ = ["Criterion", "Judge", "JudgeConfig", "Rubric", "judge_reward", "judge_reward_batch", "parse_rubric"]
