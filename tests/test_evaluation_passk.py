"""pass@k and sample summaries against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rft_jax.evaluation import default_ks, mean_pass_at_k, pass_at_k, summarize_samples


@pytest.mark.parametrize(
    "n,c,k,expected",
    [
        (4, 1, 1, 0.25),
        (4, 0, 3, 0.0),
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (10, 3, 3, 1 - 35 / 120),  # 1 - C(7,3)/C(10,3)
        (4, 3, 2, 1.0),  # only one failure: every pair holds a success
        (8, 8, 8, 1.0),
    ],
)
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_binomials_where_they_overflow_floats():
    n, c, k = 2000, 37, 100
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)  # Python ints: exact, but C(2000,100) ~ 1e170
    assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-10)


@pytest.mark.parametrize("n,c,k", [(4, 5, 1), (4, -1, 1), (4, 1, 0), (4, 1, 5)])
def test_pass_at_k_rejects_bad_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_default_ks():
    assert default_ks(1) == (1,)
    assert default_ks(8) == (1, 2, 4, 8)
    assert default_ks(6) == (1, 2, 4, 6)


def test_mean_pass_at_k():
    successes = np.array([[1, 0, 0, 0], [1, 1, 1, 1]], bool)
    assert mean_pass_at_k(successes, 2) == pytest.approx((0.5 + 1.0) / 2)  # 1 - C(3,2)/C(4,2) = 0.5


def test_summarize_samples_hand_computed():
    rewards = [[1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]]
    s = summarize_samples(
        rewards,
        greedy_rewards_P=[1, 1, 0],
        lengths_PxG=np.arange(1, 13).reshape(3, 4),
        truncated_PxG=[[0, 0, 0, 1], [0] * 4, [0] * 4],
        format_ok_PxG=[[1] * 4, [1] * 4, [0] * 4],
        errors_PxG=np.zeros((3, 4)),
    )
    assert (s.num_prompts, s.group_size) == (3, 4)
    assert s.pass_at_k == pytest.approx({1: 5 / 12, 2: 0.5, 4: 2 / 3})
    assert s.greedy_pass_at_1 == pytest.approx(2 / 3)
    assert s.reward_mean == pytest.approx(5 / 12)
    assert s.reward_within_prompt_std == pytest.approx(math.sqrt(0.25 * 0.75) / 3)
    assert s.constant_share == pytest.approx(2 / 3)
    assert s.any_success_share == pytest.approx(2 / 3)
    assert s.format_compliance == pytest.approx(2 / 3)
    assert s.truncation_rate == pytest.approx(1 / 12)
    assert s.error_rate == 0.0
    assert s.length_percentiles[50] == pytest.approx(6.5)


def test_success_threshold_and_explicit_ks():
    s = summarize_samples([[0.5, 0.9], [0.2, 0.1]], success_threshold=0.5, ks=[2, 7])
    assert s.pass_at_k == pytest.approx({1: 0.5, 2: 0.5})  # k=1 is always there, 7 > G is dropped
    assert s.constant_share == 0.0


def test_to_metrics_is_flat_and_skips_what_was_not_measured():
    metrics = summarize_samples([[1, 0], [0, 0]]).to_metrics()
    assert metrics["pass@1"] == 0.25 and metrics["pass@2"] == 0.5
    assert metrics["prompts/constant_frac"] == 0.5
    assert "greedy/pass@1" not in metrics and "format/compliance" not in metrics
    assert all(isinstance(v, (int, float)) for v in metrics.values())


def test_summarize_rejects_ragged_or_empty():
    with pytest.raises(ValueError):
        summarize_samples([])
