"""DAPO's dynamic sampling: zero-variance groups are dropped and refilled, within a cap of extra rounds."""

from __future__ import annotations

import numpy as np

from rft_jax.data.example import Example
from rft_jax.rollout.batch import pack_groups
from rft_jax.rollout.dynamic import fill_with_signal, has_signal
from rft_jax.rollout.engine import Rollouts
from rft_jax.rollout.episode import Episode


def _group(rewards, tag):
    group = []
    for r in rewards:
        e = Episode.single_turn(Example(tag, [{"role": "user", "content": tag}]), [5, 6], [7, 8, 1], [-1.0] * 3,
                                policy_version=0, finish_reason="stop")
        e.reward = r
        group.append(e)
    return group


def _rollouts(*reward_rows, tag="x"):
    return Rollouts([_group(r, f"{tag}{i}") for i, r in enumerate(reward_rows)], {"generate": 1.0, "reward": 0.5})


def test_groups_without_signal_are_replaced_by_further_prompts():
    first = _rollouts([1, 1], [0, 1], [0, 0], [1, 0], tag="a")  # two groups with a signal
    calls = []

    def more(round_):
        calls.append(round_)
        return _rollouts([0, 0], [1, 0], tag=f"r{round_}-")  # one more with a signal per round

    filled = fill_with_signal(first, more, batch_size=4, max_rounds=5)
    assert calls == [1, 2] and filled.active_B.all() and len(filled.rollouts.groups) == 4
    assert all(has_signal(g) for g in filled.rollouts.groups)
    assert filled.metrics["dynamic/extra_prompts"] == 4 and filled.metrics["dynamic/zero_std_frac_first"] == 0.5
    assert filled.rollouts.timing == {"generate": 3.0, "reward": 1.5}


def test_the_cap_keeps_the_shape_with_fillers_out_of_the_loss():
    first = _rollouts([1, 1], [0, 1], [0, 0], [2, 2])
    filled = fill_with_signal(first, lambda r: _rollouts([3, 3], [4, 4], tag=f"r{r}"), batch_size=4, max_rounds=1)
    np.testing.assert_array_equal(filled.active_B, [True, False, False, False])
    assert filled.metrics["dynamic/filler_groups"] == 3 and filled.metrics["dynamic/extra_rounds"] == 1
    batch = pack_groups(filled.rollouts.groups, np.zeros((4, 2)), pad_id=0, max_completion_tokens=16,
                        active_B=filled.active_B)
    assert np.asarray(batch.loss_mask_BxGxC)[0].sum() == 6 and not np.asarray(batch.loss_mask_BxGxC)[1:].any()
    assert np.asarray(batch.completion_mask_BxGxC)[1:].all(axis=(1,)).any()  # fillers are still real tokens
