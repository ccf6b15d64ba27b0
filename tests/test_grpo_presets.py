"""Algorithm presets build valid configs with the papers' values."""

import jax.numpy as jnp
import numpy as np
import pytest

from rft_jax.grpo import PRESETS, AdvantageConfig, GRPOLossConfig, apply_preset, grpo_loss


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_configs_that_run(name):
    advantage, loss = apply_preset(name, max_new_tokens=64)
    assert isinstance(advantage, AdvantageConfig) and isinstance(loss, GRPOLossConfig)
    assert PRESETS[name].source
    assert advantage.overlong_buffer_len <= 64  # overlong_penalty needs buffer <= budget
    logp = jnp.array([[-1.0, -2.0, -0.5]])
    value, _ = grpo_loss(logp, logp, jnp.array([1.0]), jnp.ones((1, 3)), loss, ref_logp_BxC=logp)
    assert np.isfinite(value)


def test_presets_carry_the_papers_values():
    adv, loss = apply_preset("dapo")
    assert (loss.epsilon_low, loss.epsilon_high, loss.beta, loss.aggregation) == (0.2, 0.28, 0.0, "token-mean")
    assert adv.overlong_buffer_len == 4096 and PRESETS["dapo"].dynamic_sampling
    # 4096 / 20480 = 20% of the budget: 1024 of 5120
    assert apply_preset("dapo", max_new_tokens=5120)[0].overlong_buffer_len == 1024
    adv, loss = apply_preset("dr_grpo")
    assert adv.estimator == "drgrpo" and loss.aggregation == "seq-mean-token-sum-norm" and loss.norm_length is None
    loss = apply_preset("gspo")[1]
    assert (loss.policy_loss, loss.epsilon_low, loss.epsilon_high) == ("gspo", 3e-4, 4e-4)
    loss = apply_preset("cispo")[1]
    assert (loss.policy_loss, loss.epsilon_low) == ("cispo", 1.0)
    assert apply_preset("rloo")[0].estimator == "rloo"
    assert apply_preset("grpo")[1].beta == 0.04
    with pytest.raises(ValueError, match="preset"):
        apply_preset("ppo")
