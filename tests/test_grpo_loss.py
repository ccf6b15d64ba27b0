"""The GRPO objective against numbers worked out by hand, and its gradient against finite differences."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rft_jax.grpo import (
    AGGREGATIONS,
    KL_ESTIMATORS,
    AdvantageConfig,
    GRPOLossConfig,
    clipped_surrogate,
    grpo_loss,
    loss_weights,
)

LN = math.log


def test_clipped_surrogate_by_hand():
    # ε_low = 0.2, ε_high = 0.28 -> the ratio is clipped to [0.8, 1.28].
    r = jnp.array([1.5, 1.5, 0.5, 0.5, 1.1])
    adv = jnp.array([1.0, -1.0, 1.0, -1.0, 2.0])
    loss, clipped = clipped_surrogate(jnp.log(r), adv, 0.2, 0.28)
    # max(-A·r, -A·clip(r)) per token: (-1.5, -1.28) -> clipped, (1.5, 1.28), (-0.5, -0.8),
    # (0.5, 0.8) -> clipped, (-2.2, -2.2)
    np.testing.assert_allclose(loss, [-1.28, 1.5, -0.5, 0.8, -2.2], rtol=1e-6)
    np.testing.assert_array_equal(clipped, [True, False, False, True, False])


def test_kl_estimators_by_hand():
    x = jnp.array([0.0, 1.0, -1.0, 0.5])  # x = log π_ref - log π_θ
    np.testing.assert_allclose(KL_ESTIMATORS["k1"](x), [0.0, -1.0, 1.0, -0.5])
    np.testing.assert_allclose(KL_ESTIMATORS["k2"](x), [0.0, 0.5, 0.5, 0.125])
    # eˣ - x - 1: e - 2, e⁻¹, e^0.5 - 1.5
    np.testing.assert_allclose(KL_ESTIMATORS["k3"](x), [0.0, 0.718281828, 0.367879441, 0.148721271], rtol=1e-6)


def test_k3_is_clamped_and_finite_for_huge_log_ratios():
    # x clamped to [-20, 20] before the exp, the result to [-10, 10] (verl's low_var_kl):
    # x = 1000 -> e^20 - 21 -> 10; x = -1000 -> e^-20 + 20 - 1 = 19.000000002 -> 10; x = 1 -> e - 2, untouched.
    x = jnp.array([1000.0, -1000.0, 100.0, 1.0])
    np.testing.assert_allclose(KL_ESTIMATORS["k3"](x), [10.0, 10.0, 10.0, 0.718281828], rtol=1e-6)
    # Through the loss: a reference far from the policy gives a finite loss and gradient.
    ref = OLD_BxC.at[0, 0].set(100.0)
    cfg = GRPOLossConfig(beta=0.1)
    loss, grad = jax.value_and_grad(lambda lp: grpo_loss(lp, OLD_BxC, ADV_B, MASK, cfg, ref_logp_BxC=ref)[0])(LOGP_BxC)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))


MASK_BxC = jnp.array([[1, 1, 0, 0], [1, 0, 0, 0]])
X_BxC = jnp.array([[1.0, 2.0, 9.0, 9.0], [4.0, 9.0, 9.0, 9.0]])  # 9s are masked out


@pytest.mark.parametrize(
    "name, norm_len, expected",
    [
        ("token-mean", 4, (1 + 2 + 4) / 3),
        ("seq-mean-token-mean", 4, ((1 + 2) / 2 + 4 / 1) / 2),
        ("seq-mean-token-sum-norm", 4, ((1 + 2) / 4 + 4 / 4) / 2),
        ("seq-mean-token-sum-norm", 8, ((1 + 2) / 8 + 4 / 8) / 2),
    ],
)
def test_aggregation_by_hand(name, norm_len, expected):
    w_BxC = AGGREGATIONS[name](MASK_BxC, norm_len)
    np.testing.assert_allclose(jnp.sum(w_BxC * X_BxC), expected, rtol=1e-6)


def test_aggregation_with_an_empty_sequence():
    mask_BxC = MASK_BxC.at[1].set(0)
    # seq-mean-token-mean ignores the empty sequence; Dr.GRPO's constant norm still counts it.
    np.testing.assert_allclose(jnp.sum(AGGREGATIONS["seq-mean-token-mean"](mask_BxC, 4) * X_BxC), 1.5)
    np.testing.assert_allclose(jnp.sum(AGGREGATIONS["seq-mean-token-sum-norm"](mask_BxC, 4) * X_BxC), 0.375)
    np.testing.assert_array_equal(AGGREGATIONS["token-mean"](jnp.zeros((2, 3)), 3), jnp.zeros((2, 3)))


# Worked example. Row 0 has A = +1, row 1 has A = -1; ratios r = [1.5, 0.5, 1.0]; token (1, 2) is masked.
OLD_BxC = jnp.full((2, 3), -1.0)
R_BxC = jnp.array([[1.5, 0.5, 1.0], [1.5, 0.5, 1.0]])
LOGP_BxC = OLD_BxC + jnp.log(R_BxC)
ADV_B = jnp.array([1.0, -1.0])
MASK = jnp.array([[1, 1, 1], [1, 1, 0]])
ENTROPY_BxC = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
# pg per token: [[-1.28 (clipped), -0.5, -1.0], [1.5, 0.8 (clipped), -]] -> token mean -0.48 / 5
PG = -0.096
# ref = old, so x = ref - logp = -ln r and k3 = 1/r + ln r - 1: r=1.5 -> 0.0721318, r=0.5 -> 0.3068528
KL = (2 * (1 / 1.5 + LN(1.5) - 1) + 2 * (2 + LN(0.5) - 1)) / 5


def test_grpo_loss_worked_example():
    cfg = GRPOLossConfig(beta=0.1, entropy_coef=0.01)
    loss, metrics = grpo_loss(LOGP_BxC, OLD_BxC, ADV_B, MASK, cfg, ref_logp_BxC=OLD_BxC, entropy_BxC=ENTROPY_BxC)
    np.testing.assert_allclose(metrics["actor/pg_loss"], PG, rtol=1e-5)
    np.testing.assert_allclose(metrics["actor/pg_clipfrac"], 2 / 5)
    np.testing.assert_allclose(metrics["actor/ppo_kl"], -2 * LN(0.75) / 5, rtol=1e-5)  # mean(old - logp)
    np.testing.assert_allclose(metrics["actor/kl_loss"], KL, rtol=1e-5)
    np.testing.assert_allclose(metrics["actor/entropy"], (1 + 2 + 3 + 4 + 5) / 5, rtol=1e-6)
    np.testing.assert_allclose(loss, PG + 0.1 * KL - 0.01 * 3.0, rtol=1e-5)


@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_entropy_metric_is_the_token_mean_under_every_aggregation(aggregation):
    """actor/entropy is what the entropy alarms read: the same quantity whatever the loss aggregation. Weighted
    by Dr.GRPO's 1/L_norm (here L_norm = 10) it read 3 x 5 / (10 x 2) = 0.75 instead of 3; the bonus term in
    the loss keeps the aggregation's weights."""
    cfg = GRPOLossConfig(aggregation=aggregation, norm_length=10, entropy_coef=0.01)
    loss, metrics = grpo_loss(LOGP_BxC, OLD_BxC, ADV_B, MASK, cfg, entropy_BxC=ENTROPY_BxC)
    np.testing.assert_allclose(metrics["actor/entropy"], 3.0, rtol=1e-6)
    _, weight = loss_weights(MASK, cfg)
    np.testing.assert_allclose(loss, metrics["actor/pg_loss"] - 0.01 * jnp.sum(weight * ENTROPY_BxC), rtol=1e-5)


def test_grpo_loss_gradient_by_hand():
    cfg = GRPOLossConfig(beta=0.1)
    grad = jax.grad(lambda lp: grpo_loss(lp, OLD_BxC, ADV_B, MASK, cfg, ref_logp_BxC=OLD_BxC)[0])(LOGP_BxC)
    # w = 1/5; d pg = 0 where clipped, else -A·r; d k3 / d logp = 1 - 1/r; β = 0.1
    expected = 0.2 * jnp.array([[0 + 0.1 / 3, -0.5 - 0.1, -1.0], [1.5 + 0.1 / 3, 0 - 0.1, 0.0]])
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kl_estimator", ["k1", "k2", "k3"])
@pytest.mark.parametrize("aggregation", sorted(AGGREGATIONS))
def test_grpo_loss_gradient_matches_finite_differences(kl_estimator, aggregation):
    rng = np.random.default_rng(0)
    # Ratios chosen away from the clip edges 0.8 and 1.28, where the loss has kinks.
    r_BxC = rng.choice([0.5, 0.7, 0.9, 1.0, 1.1, 1.2, 1.5], size=(2, 5))
    old_BxC = jnp.asarray(-rng.random((2, 5)) - 0.5, jnp.float32)
    logp_BxC = old_BxC + jnp.log(jnp.asarray(r_BxC, jnp.float32))
    ref_BxC = old_BxC + jnp.asarray(rng.normal(size=(2, 5)) * 0.3, jnp.float32)
    mask_BxC = jnp.array([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    adv_B = jnp.array([0.7, -1.3])
    cfg = GRPOLossConfig(beta=0.5, kl_estimator=kl_estimator, aggregation=aggregation, norm_length=7)
    f = lambda lp: grpo_loss(lp, old_BxC, adv_B, mask_BxC, cfg, ref_logp_BxC=ref_BxC)[0]  # noqa: E731
    grad = jax.jit(jax.grad(f))(logp_BxC)
    h = 1e-2
    bumps_Kx2x5 = h * jnp.eye(10).reshape(10, 2, 5)  # one perturbed token per row
    fd = jax.jit(jax.vmap(lambda e: (f(logp_BxC + e) - f(logp_BxC - e)) / (2 * h)))(bumps_Kx2x5)
    np.testing.assert_allclose(grad, fd.reshape(2, 5), atol=2e-4)


def test_first_pass_has_no_clipping_and_zero_ppo_kl():
    # μ's first pass: logp == old_logp, so r = 1 and pg = -Σ w·A.
    loss, metrics = grpo_loss(OLD_BxC, OLD_BxC, ADV_B, MASK, GRPOLossConfig())
    assert float(metrics["actor/pg_clipfrac"]) == 0.0 and float(metrics["actor/ppo_kl"]) == 0.0
    np.testing.assert_allclose(loss, -(3 * 1.0 + 2 * -1.0) / 5, rtol=1e-6)
    assert "actor/kl_loss" not in metrics and "actor/entropy" not in metrics  # β = 0: no reference needed


def test_mask_truncated_drops_whole_sequences():
    cfg = GRPOLossConfig(mask_truncated=True, aggregation="seq-mean-token-mean")
    truncated_B = jnp.array([False, True])
    loss, _ = grpo_loss(LOGP_BxC, OLD_BxC, ADV_B, MASK, cfg, truncated_B=truncated_B)
    plain = GRPOLossConfig(aggregation="seq-mean-token-mean")
    expected, _ = grpo_loss(LOGP_BxC, OLD_BxC, ADV_B, MASK.at[1].set(0), plain)
    np.testing.assert_allclose(loss, expected)
    np.testing.assert_allclose(loss, (-1.28 - 0.5 - 1.0) / 3, rtol=1e-6)


def test_masked_tokens_may_hold_any_value():
    # Padding positions with -inf log-probs must not turn the loss or its gradient into NaN.
    logp = LOGP_BxC.at[1, 2].set(-jnp.inf)
    cfg = GRPOLossConfig(beta=0.1)
    f = lambda lp: grpo_loss(lp, OLD_BxC, ADV_B, MASK, cfg, ref_logp_BxC=OLD_BxC)[0]  # noqa: E731
    np.testing.assert_allclose(f(logp), f(LOGP_BxC))
    np.testing.assert_array_equal(jax.grad(f)(logp), jax.grad(f)(LOGP_BxC))


def test_missing_inputs_and_bad_config_fail_loudly():
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_loss(LOGP_BxC, OLD_BxC, ADV_B, MASK, GRPOLossConfig(beta=0.1))
    with pytest.raises(ValueError, match="entropy"):
        grpo_loss(LOGP_BxC, OLD_BxC, ADV_B, MASK, GRPOLossConfig(entropy_coef=0.1))
    with pytest.raises(ValueError, match="truncated"):
        grpo_loss(LOGP_BxC, OLD_BxC, ADV_B, MASK, GRPOLossConfig(mask_truncated=True))
    for bad in [dict(kl_estimator="k4"), dict(aggregation="sum"), dict(epsilon_low=1.0)]:
        with pytest.raises(ValueError):
            GRPOLossConfig(**bad)
    with pytest.raises(ValueError, match="estimator"):
        AdvantageConfig(estimator="ppo")


def test_dual_clip_caps_negative_advantages_by_hand():
    # c = 3, ε = (0.2, 0.28). Row 0 has A = -1: r = 5 -> max(5, 1.28) = 5, capped to -A·c = 3 (gradient 0);
    # r = 2 -> 2 < 3, untouched (gradient -A·r = 2); r = 0.5 -> max(0.5, 0.8) = 0.8, PPO-clipped (gradient 0).
    # Row 1 has A = +1: r = 5 -> PPO clip -1.28; no cap for A > 0. r = 1 -> -1; r = 0.5 -> -0.5.
    old = jnp.zeros((2, 3))
    logp = jnp.log(jnp.array([[5.0, 2.0, 0.5], [5.0, 1.0, 0.5]]))
    adv = jnp.array([-1.0, 1.0])
    mask = jnp.ones((2, 3))
    cfg = GRPOLossConfig(clip_ratio_c=3.0)
    (loss, metrics), grad = jax.value_and_grad(lambda lp: grpo_loss(lp, old, adv, mask, cfg), has_aux=True)(logp)
    # token-mean w = 1/6: (3 + 2 + 0.8 - 1.28 - 1 - 0.5) / 6 = 3.02 / 6
    np.testing.assert_allclose(loss, 3.02 / 6, rtol=1e-6)
    # d pg / d logp = -A·r where unclipped: [0, 2, 0], [0, -1, -0.5]
    np.testing.assert_allclose(grad, np.array([[0.0, 2.0, 0.0], [0.0, -1.0, -0.5]]) / 6, rtol=1e-6, atol=1e-8)
    # the capped token and the two PPO-clipped ones (r = 0.5 with A < 0, r = 5 with A > 0)
    np.testing.assert_allclose(metrics["actor/pg_clipfrac"], 3 / 6)
    # Off by default: the r = 5, A = -1 token costs the full 5.
    plain, _ = grpo_loss(logp, old, adv, mask, GRPOLossConfig())
    np.testing.assert_allclose(plain, 5.02 / 6, rtol=1e-6)
    for bad in [dict(clip_ratio_c=1.0), dict(clip_ratio_c=3.0, policy_loss="gspo")]:
        with pytest.raises(ValueError, match="clip_ratio_c"):
            GRPOLossConfig(**bad)


def test_grpo_loss_jits_with_config_closed_over():
    cfg = GRPOLossConfig(beta=0.1)
    f = jax.jit(lambda lp: grpo_loss(lp, OLD_BxC, ADV_B, MASK, cfg, ref_logp_BxC=OLD_BxC))
    np.testing.assert_allclose(f(LOGP_BxC)[0], PG + 0.1 * KL, rtol=1e-5)
