"""Group-relative advantages, zero-variance groups and DAPO's overlong penalty, by hand."""

import jax.numpy as jnp
import numpy as np
import pytest

from rft_jax.grpo import group_advantages, groups_with_signal, overlong_penalty, zero_variance_groups

# Group 0: mean 0.5, unbiased std sqrt(1/3) = 0.57735; group 1: all equal.
REWARDS_BxG = jnp.array([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])


@pytest.mark.parametrize(
    "mode, expected_row0",
    [
        ("grpo", [0.866025, -0.866025, -0.866025, 0.866025]),  # ±0.5 / 0.57735
        ("drgrpo", [0.5, -0.5, -0.5, 0.5]),
        # batch std over all 8 rewards: sqrt(5.5 / 7) = 0.886405; 0.5 / 0.886405 = 0.564076
        ("batch_std", [0.564076, -0.564076, -0.564076, 0.564076]),
        # leave-one-out: 1 - mean(0, 0, 1) = 2/3, 0 - mean(1, 0, 1) = -2/3
        ("rloo", [0.666667, -0.666667, -0.666667, 0.666667]),
        # centred rewards (±0.5 and four 0s) have batch std sqrt(1 / 7) = 0.377964; 0.5 / 0.377964 = 1.322876
        ("reinforce_pp_baseline", [1.322876, -1.322876, -1.322876, 1.322876]),
    ],
)
def test_group_advantages_by_hand(mode, expected_row0):
    adv_BxG = group_advantages(REWARDS_BxG, mode)
    np.testing.assert_allclose(adv_BxG[0], expected_row0, rtol=1e-5)
    np.testing.assert_array_equal(adv_BxG[1], [0.0, 0.0, 0.0, 0.0])  # no signal in any group-relative mode


def test_reinforce_pp_normalises_over_the_batch():
    # No group baseline: batch mean 10 / 8 = 1.25, batch std sqrt(5.5 / 7) = 0.886405.
    # (1 - 1.25) / 0.886405 = -0.282038, (0 - 1.25) / 0.886405 = -1.410190, (2 - 1.25) / 0.886405 = 0.846114
    adv_BxG = group_advantages(REWARDS_BxG, "reinforce_pp")
    np.testing.assert_allclose(adv_BxG, [[-0.282038, -1.410190, -1.410190, -0.282038], [0.846114] * 4], rtol=1e-5)
    np.testing.assert_array_equal(group_advantages(jnp.full((2, 7), 0.1), "reinforce_pp"), np.zeros((2, 7)))


@pytest.mark.parametrize("mode", ["grpo", "drgrpo", "batch_std", "rloo", "reinforce_pp_baseline"])
def test_equal_rewards_give_exactly_zero_advantage(mode):
    # float32 sums of 0.1, 0.2, ... are inexact: seven 0.1s average to 0.1 + 7e-9 when summed in order, so
    # r - mean is an ulp off and grpo divides it by a std of ~1e-8 (+ eps 1e-6): about 0.007, not 0.
    values = [0.1, 0.2, 0.3, 0.7, 0.9, 1 / 3]
    rewards_BxG = jnp.asarray([[v] * 7 for v in values] + [[0.0, 1.0] * 3 + [1.0]], jnp.float32)
    adv_BxG = group_advantages(rewards_BxG, mode)
    np.testing.assert_array_equal(adv_BxG[:-1], np.zeros((len(values), 7)))
    assert np.all(adv_BxG[-1] != 0.0)
    three_BxG = jnp.asarray([[0.9] * 3, [0.1] * 3, [0.7] * 3, [0.0, 0.5, 1.0]], jnp.float32)
    np.testing.assert_array_equal(group_advantages(three_BxG, mode)[:-1], np.zeros((3, 3)))


def test_group_advantages_rejects_groups_of_one_and_unknown_modes():
    with pytest.raises(ValueError):
        group_advantages(jnp.ones((4, 1)))
    with pytest.raises(KeyError):
        group_advantages(REWARDS_BxG, "gae")


def test_zero_variance_groups_and_keep_mask():
    rewards_BxG = jnp.array([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.5000001]])
    np.testing.assert_array_equal(zero_variance_groups(rewards_BxG), [True, False, True, False])
    np.testing.assert_array_equal(groups_with_signal(rewards_BxG), [False, True, False, True])
    assert int(jnp.sum(zero_variance_groups(rewards_BxG))) == 2


def test_overlong_penalty_by_hand():
    # L_max = 10, L_cache = 4: free up to 6 tokens, then -1/4 per token, -1 beyond the budget.
    lengths_B = jnp.array([3, 6, 7, 8, 10, 12])
    np.testing.assert_allclose(overlong_penalty(lengths_B, 10, 4), [0, 0, -0.25, -0.5, -1, -1])
    np.testing.assert_allclose(overlong_penalty(lengths_B, 10, 4, factor=0.5), [0, 0, -0.125, -0.25, -0.5, -0.5])
    with pytest.raises(ValueError):
        overlong_penalty(lengths_B, 10, 0)
