"""The baseline verdict on hand-built evaluations, one per outcome."""

from __future__ import annotations

import numpy as np

from rft_jax.evaluation import VerdictConfig, baseline_verdict, summarize_samples
from rft_jax.evaluation import verdict as v


def _rewards(success_per_prompt: list[int], group: int = 8) -> np.ndarray:
    """P x G 0/1 rewards with the given number of successes per prompt."""
    return np.array([[1.0] * c + [0.0] * (group - c) for c in success_per_prompt])


def test_ready_for_rft():
    out = baseline_verdict(summarize_samples(_rewards([0, 2, 4, 6, 8, 3]), greedy_rewards_P=[0, 0, 1, 1, 1, 0]))
    assert out.label == v.READY and out.title == "Ready for RFT"
    assert "47.9% of samples succeed" in out.reasons[0]  # 23 of 48
    assert any("greedy pass@1 is 50.0%" in r for r in out.reasons)
    assert "rft-jax train" in out.next_step


def test_ready_but_warns_when_most_groups_give_no_gradient():
    out = baseline_verdict(summarize_samples(_rewards([0, 0, 0, 8, 8, 4])))
    assert out.label == v.READY and out.reasons[1].startswith("warning: 83% of prompts give no gradient")


def test_too_easy():
    out = baseline_verdict(summarize_samples(_rewards([8, 8, 8, 7])))
    assert out.label == v.TOO_EASY and "96.9%" in out.reasons[0]


def test_sft_first_below_five_percent():
    out = baseline_verdict(summarize_samples(_rewards([1, 0, 0, 0, 0, 0])))  # 1 of 48 = 2.1%
    assert out.label == v.SFT_FIRST and "2.1%" in out.reasons[0] and "rft-jax sft" in out.next_step


def test_truncation_comes_before_success_rate():
    truncated = np.zeros((6, 8), bool)
    truncated[:2] = True  # 2 of 6 prompts = 33%
    out = baseline_verdict(summarize_samples(_rewards([1, 0, 0, 0, 0, 0]), truncated_PxG=truncated))
    assert out.label == v.RAISE_RESPONSE_LENGTH and "33%" in out.reasons[0]


def test_constant_reward_means_fix_the_reward():
    out = baseline_verdict(summarize_samples(np.full((4, 8), 0.5)))
    assert out.label == v.FIX_REWARD and "every sample scored exactly 0.5" in out.reasons[0]


def test_reward_errors_mean_fix_the_reward():
    errors = np.zeros((6, 8), bool)
    errors[0, :4] = True  # 4 of 48 = 8.3%
    out = baseline_verdict(summarize_samples(_rewards([0, 2, 4, 6, 8, 3]), errors_PxG=errors))
    assert out.label == v.FIX_REWARD and "8.3% of rewards raised" in out.reasons[0]


def test_thresholds_are_configurable_and_verdict_serializes():
    summary = summarize_samples(_rewards([8, 8, 8, 7]))
    out = baseline_verdict(summary, VerdictConfig(too_easy_success=0.99))
    assert out.label == v.READY
    d = out.to_dict()
    assert d["label"] == "ready" and isinstance(d["reasons"], list) and d["next_step"]
