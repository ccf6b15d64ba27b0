"""Metric names shared by the trainer, the alarms, the console and the report.

The names follow verl and the managed RFT services, so dashboards and habits
carry over. One place for them means a typo is an AttributeError, not a chart
that silently stays empty. See docs/monitoring.md for the meaning of each.
"""

from __future__ import annotations

# Rewards and advantages over the rollout batch (all B*G completions).
REWARD_MEAN = "critic/rewards/mean"
REWARD_MAX = "critic/rewards/max"
REWARD_MIN = "critic/rewards/min"
ADVANTAGE_MEAN = "critic/advantages/mean"
ADVANTAGE_MAX = "critic/advantages/max"
ADVANTAGE_MIN = "critic/advantages/min"
REWARD_COMPONENT_PREFIX = "rewards/"  # rewards/<component>/mean
REWARD_ERRORS = "reward/errors"  # share (0..1) of completions whose reward raised
STALENESS_MEAN = "async/staleness_mean"  # policy versions between sampling and training (rft_jax/train/async_loop.py)
STALENESS_MAX = "async/staleness_max"
IS_RATIO_MEAN = "off_policy/is_ratio_mean"  # pi_prox / pi_behaviour (rft_jax/grpo/off_policy.py)
IS_RATIO_MAX = "off_policy/is_ratio_max"
IS_MASKED_FRAC = "off_policy/masked_frac"
MISMATCH_KL = "mismatch/kl"  # KL(sampler || trainer) per token on the sampled tokens (rft_jax/grpo/mismatch.py)

# Policy update.
PG_LOSS = "actor/pg_loss"
PG_CLIPFRAC = "actor/pg_clipfrac"
PPO_KL = "actor/ppo_kl"  # KL(old policy || new policy) during the update
ENTROPY = "actor/entropy"
KL_LOSS = "actor/kl_loss"  # KL to the reference policy (the beta-weighted term, unweighted)
REF_KL = "actor/ref_kl"  # KL to the reference, measured every N steps on rollouts even when beta = 0
GRAD_NORM = "actor/grad_norm"
ROUTER_AUX_LOSS = "actor/router_aux_loss"  # mixture of experts: the load-balancing loss (unweighted), when on
LR = "actor/lr"

# Lengths, in tokens.
RESPONSE_LENGTH_MEAN = "response_length/mean"
RESPONSE_LENGTH_MAX = "response_length/max"
RESPONSE_LENGTH_MIN = "response_length/min"
RESPONSE_CLIP_RATIO = "response_length/clip_ratio"  # share that hit max_new_tokens
PROMPT_LENGTH_MEAN = "prompt_length/mean"

# Reasoning mode only (rft_jax/rollout/metrics.py::reasoning_metrics): lengths in tokens, rates as shares.
REASONING_PREFIX = "reasoning/"
THINK_LENGTH_MEAN = "reasoning/think_length/mean"
THINK_LENGTH_MAX = "reasoning/think_length/max"
ANSWER_LENGTH_MEAN = "reasoning/answer_length/mean"
BUDGET_HIT_RATE = "reasoning/budget_hit_rate"  # share whose thinking the think budget cut short
WELL_FORMED_RATE = "reasoning/well_formed_rate"  # share that closed the thinking (an answer exists)
REASONING = (THINK_LENGTH_MEAN, THINK_LENGTH_MAX, ANSWER_LENGTH_MEAN, BUDGET_HIT_RATE, WELL_FORMED_RATE)

# Learning signal: share of prompt groups whose G rewards are all equal (zero advantage).
ZERO_STD_FRAC = "batch/zero_std_frac"

# Validation, logged every `eval_every` steps only.
VAL_REWARD_MEAN = "val/reward/mean"
VAL_PASS_AT_1 = "val/pass@1"

# Wall-clock seconds per phase of a step, and throughput.
TIMING_PREFIX = "timing_s/"
TIMING_GENERATE = "timing_s/generate"
TIMING_REWARD = "timing_s/reward"
TIMING_LOGPROB = "timing_s/logprob"
TIMING_UPDATE = "timing_s/update"
TIMING_STEP = "timing_s/step"
TOKENS_PER_S = "perf/tokens_per_s"

# Alarms add alarm/<name> = 1.0 while firing, 0.0 otherwise.
ALARM_PREFIX = "alarm/"


def reward_component(name: str) -> str:
    """The metric name of one reward component's batch mean."""
    return f"{REWARD_COMPONENT_PREFIX}{name}/mean"


def reward_components(metrics: dict[str, float]) -> dict[str, float]:
    """`{component: mean}` for every `rewards/<component>/mean` in a step's metrics."""
    prefix, suffix = REWARD_COMPONENT_PREFIX, "/mean"
    return {
        key[len(prefix) : -len(suffix)]: value
        for key, value in metrics.items()
        if key.startswith(prefix) and key.endswith(suffix)
    }
