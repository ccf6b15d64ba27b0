"""Policy-loss variants (GSPO, CISPO, SAPO): value and gradient on 1x3 examples worked out by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rft_jax.grpo import POLICY_LOSSES, GRPOLossConfig, grpo_loss


def _value_grad(logp, old, adv, mask, cfg):
    """((loss, metrics), d loss / d logp) of `grpo_loss`."""
    return jax.value_and_grad(lambda lp: grpo_loss(lp, old, adv, mask, cfg), has_aux=True)(logp)


def test_gspo_uses_the_sequence_ratio_with_a_gradient_through_every_token():
    # log r = [0.3, -0.1, 5.0], the third token masked: log s = mean(0.3, -0.1) = 0.1, s = e^0.1 = 1.105171.
    # A = 1, ε = (0.2, 0.28): s is inside [0.8, 1.28], so pg_t = -A·s on both valid tokens.
    # token-mean w = 1/2: loss = -s = -1.105171; d loss / d logp_t = w·(-A·s) = -0.552585, 0 for the masked token.
    old = jnp.full((1, 3), -1.0)
    logp = old + jnp.array([[0.3, -0.1, 5.0]])
    adv, mask = jnp.array([1.0]), jnp.array([[1, 1, 0]])
    (loss, metrics), grad = _value_grad(logp, old, adv, mask, GRPOLossConfig(policy_loss="gspo"))
    s = math.exp(0.1)
    np.testing.assert_allclose(loss, -s, rtol=1e-6)
    np.testing.assert_allclose(grad, [[-s / 2, -s / 2, 0.0]], rtol=1e-6)
    assert float(metrics["actor/pg_clipfrac"]) == 0.0
    # The GSPO paper's range (3e-4, 4e-4): s > 1.0004 is clipped for A > 0, the loss is -1.0004 and no gradient.
    cfg = GRPOLossConfig(policy_loss="gspo", epsilon_low=3e-4, epsilon_high=4e-4)
    (loss, metrics), grad = _value_grad(logp, old, adv, mask, cfg)
    np.testing.assert_allclose(loss, -1.0004, rtol=1e-6)
    np.testing.assert_array_equal(grad, np.zeros((1, 3)))
    assert float(metrics["actor/pg_clipfrac"]) == 1.0  # every token of the clipped sequence


def test_gspo_token_gradient_equals_the_sequence_objective():
    # With seq-mean-token-mean, GSPO-token's gradient is that of the sequence-level -A·s(θ), s = exp(mean log r).
    rng = np.random.default_rng(0)
    old = jnp.asarray(-rng.random((2, 5)) - 0.5, jnp.float32)
    logp = old + jnp.asarray(rng.normal(size=(2, 5)) * 0.05, jnp.float32)
    mask = jnp.array([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    adv = jnp.array([0.7, -1.3])
    cfg = GRPOLossConfig(policy_loss="gspo", epsilon_low=0.9, epsilon_high=10.0, aggregation="seq-mean-token-mean")
    grad = jax.grad(lambda lp: grpo_loss(lp, old, adv, mask, cfg)[0])(logp)

    def sequence_objective(lp):
        n = jnp.sum(mask, axis=1)
        s = jnp.exp(jnp.sum(jnp.where(mask, lp - old, 0.0), axis=1) / n)
        return jnp.mean(-adv * s)

    np.testing.assert_allclose(grad, jax.grad(sequence_objective)(logp), rtol=1e-5, atol=1e-7)


def test_cispo_clips_the_is_weight_and_keeps_every_gradient():
    # r = [0.5, 1, 5], A = 2, ε = (0.2, 3.0): weights sg(clip(r, 0.8, 4)) = [0.8, 1, 4].
    # pg_t = -weight·A·log r = [-0.8·2·ln 0.5, 0, -4·2·ln 5] = [1.109035, 0, -12.875503]
    # token-mean w = 1/3: loss = -11.766468 / 3 = -3.922156;
    # gradient -weight·A / 3 = [-0.533333, -0.666667, -2.666667]:
    # nonzero on every token, even the two whose weight is clipped (PPO would drop the r = 5 one).
    old = jnp.full((1, 3), -2.0)
    logp = old + jnp.log(jnp.array([[0.5, 1.0, 5.0]]))
    adv, mask = jnp.array([2.0]), jnp.ones((1, 3))
    cfg = GRPOLossConfig(policy_loss="cispo", epsilon_low=0.2, epsilon_high=3.0)
    (loss, metrics), grad = _value_grad(logp, old, adv, mask, cfg)
    np.testing.assert_allclose(loss, -3.9221559, rtol=1e-6)
    np.testing.assert_allclose(grad, [[-1.6 / 3, -2.0 / 3, -8.0 / 3]], rtol=1e-6)
    np.testing.assert_allclose(metrics["actor/pg_clipfrac"], 2 / 3)  # two IS weights clipped
    # ε_low = 1 drops the lower bound (MiniMax-M1): weight 0.5 for r = 0.5, gradient -0.5·2 / 3.
    grad = _value_grad(logp, old, adv, mask, GRPOLossConfig(policy_loss="cispo", epsilon_low=1.0, epsilon_high=3.0))[1]
    np.testing.assert_allclose(grad[0, 0], -1.0 / 3, rtol=1e-6)


def test_sapo_soft_gate_by_hand():
    # f(r) = (4/τ)·σ(τ·(r - 1)); A = 1 uses τ_pos = 1. r = [1, 2, 0.5]:
    # f = [2, 4·σ(1), 4·σ(-0.5)] = [2, 2.924234, 1.510163]; pg = -A·f; token-mean loss = -6.434397 / 3 = -2.144799.
    # d pg / d logp = -A·4σ(1-σ)·r: [-1, -0.786448·2, -0.940015·0.5] = [-1, -1.572895, -0.470007], / 3 each.
    old = jnp.zeros((1, 3))
    logp = jnp.log(jnp.array([[1.0, 2.0, 0.5]]))
    mask = jnp.ones((1, 3))
    cfg = GRPOLossConfig(policy_loss="sapo")
    (loss, metrics), grad = _value_grad(logp, old, jnp.array([1.0]), mask, cfg)
    np.testing.assert_allclose(loss, -2.144799, rtol=1e-6)
    np.testing.assert_allclose(grad, [[-0.333333, -0.524298, -0.156669]], rtol=1e-5)
    assert float(metrics["actor/pg_clipfrac"]) == 0.0  # no hard clip
    # A = -1 uses τ_neg = 1.05: f = (4/1.05)·σ(1.05·(r - 1)) = [1.9047619, 2.8219996, 1.4159383];
    # d pg / d logp = 4σ(1-σ)·r / 3 = [0.333333, 0.512073, 0.155690] (at r = 1 the plain policy gradient, any τ).
    (loss, _), grad = _value_grad(logp, old, jnp.array([-1.0]), mask, cfg)
    np.testing.assert_allclose(loss, (1.9047619 + 2.8219996 + 1.4159383) / 3, rtol=1e-6)
    np.testing.assert_allclose(grad, [[0.333333, 0.512073, 0.155690]], rtol=1e-5)


@pytest.mark.parametrize("policy_loss", sorted(POLICY_LOSSES))
def test_every_policy_loss_ignores_padding_and_starts_at_the_plain_policy_gradient(policy_loss):
    # First pass (logp == old_logp, r = 1): every variant's gradient is the policy gradient -w·A, and a padded
    # log-prob of -inf changes nothing.
    old = jnp.array([[-1.0, -2.0, -0.5], [-1.5, -0.7, -3.0]])
    adv, mask = jnp.array([1.5, -0.5]), jnp.array([[1, 1, 1], [1, 1, 0]])
    cfg = GRPOLossConfig(policy_loss=policy_loss)
    f = lambda lp: grpo_loss(lp, jax.lax.stop_gradient(lp), adv, mask, cfg)[0]  # noqa: E731
    padded = old.at[1, 2].set(-jnp.inf)
    grad = jax.grad(f)(padded)
    np.testing.assert_allclose(grad, np.array([[-1.5] * 3, [0.5, 0.5, 0.0]]) / 5, rtol=1e-6)
    np.testing.assert_array_equal(grad, jax.grad(f)(old))
    assert np.isfinite(f(padded))


@pytest.mark.parametrize("policy_loss", sorted(POLICY_LOSSES))
def test_every_policy_loss_gradient_matches_finite_differences(policy_loss):
    rng = np.random.default_rng(1)
    # Ratios away from the clip edges (GSPO's sequence ratio too), where the losses have kinks.
    r_BxC = rng.choice([0.5, 0.7, 0.9, 1.0, 1.1, 1.5], size=(2, 5))
    old = jnp.asarray(-rng.random((2, 5)) - 0.5, jnp.float32)
    logp = old + jnp.log(jnp.asarray(r_BxC, jnp.float32))
    mask = jnp.array([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    adv = jnp.array([0.7, -1.3])
    eps = dict(epsilon_low=0.95, epsilon_high=5.0) if policy_loss == "gspo" else {}
    cfg = GRPOLossConfig(policy_loss=policy_loss, **eps)
    f = lambda lp: grpo_loss(lp, old, adv, mask, cfg)[0]  # noqa: E731
    grad = jax.jit(jax.grad(f))(logp)
    if policy_loss == "cispo":  # the IS weight is stop-gradiented: the gradient is sg(weight)·(-A)·w by design
        weight = jnp.clip(jnp.asarray(r_BxC, jnp.float32), 0.8, 1.28)
        np.testing.assert_allclose(grad, jnp.where(mask, -weight * adv[:, None] / 7, 0.0), rtol=1e-5)
        return
    h = 1e-2
    bumps_Kx2x5 = h * jnp.eye(10).reshape(10, 2, 5)
    fd = jax.jit(jax.vmap(lambda e: (f(logp + e) - f(logp - e)) / (2 * h)))(bumps_Kx2x5)
    np.testing.assert_allclose(grad, fd.reshape(2, 5), atol=2e-4)


def test_policy_loss_config_is_checked():
    for bad in [dict(policy_loss="trpo"), dict(policy_loss="gspo", epsilon_low=1.0), dict(sapo_tau_neg=0.0)]:
        with pytest.raises(ValueError):
            GRPOLossConfig(**bad)
    GRPOLossConfig(policy_loss="cispo", epsilon_low=1.0)  # CISPO alone may drop the lower bound
