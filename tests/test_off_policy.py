"""Off-policy correction (rft_jax/grpo/off_policy.py) against weights worked out by hand, through the loss, the
train step's loss and the trainer's mu > 1 path."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rft_jax.data.example import Example
from rft_jax.grpo import GRPOLossConfig, OffPolicyConfig, OptimizerConfig, grpo_loss, importance_weights
from rft_jax.model import ModelConfig, init_params
from rft_jax.model.logprobs import completion_logprobs
from rft_jax.model.lora import LoraConfig, init_lora
from rft_jax.model.registry import ModelSpec
from rft_jax.parallel import MeshConfig, make_mesh
from rft_jax.rewards import RewardResult
from rft_jax.rewards.spec import RewardSpec
from rft_jax.rollout.batch import RolloutBatch
from rft_jax.train.config import SamplingConfig, TrainConfig
from rft_jax.train.step import StepSettings, batch_loss
from rft_jax.train.trainer import build_trainer

LN = math.log

# Two sequences; token weights w = π_prox / π_behav of [3, 0.5, 1.5 | pad] and [0.25, 1.2 | pad, pad].
# The padding holds -inf log-probs (behaviour) and -inf - -inf = NaN differences, which must never leak.
VALID_BxC = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
BEHAV_BxC = jnp.array([[-1.0, -2.0, -1.0, -jnp.inf], [-1.0, -1.0, -jnp.inf, -jnp.inf]])
PROX_BxC = jnp.array([[-1.0 + LN(3), -2.0 + LN(0.5), -1.0 + LN(1.5), -jnp.inf],
                      [-1.0 + LN(0.25), -1.0 + LN(1.2), 0.0, -jnp.inf]])
CFG = dict(cap=2.0, mask_low=0.2)


def knobs(correction: str) -> dict:
    """CFG's settings that `correction` reads (the others are refused as having no effect)."""
    return {"none": {}, "is": {}, "tis": dict(cap=CFG["cap"]), "mask": CFG}[correction]
GEO0, GEO1 = 2.25 ** (1 / 3), 0.3 ** 0.5  # exp(mean log w): 1.3104, 0.5477


def _rows(row0, row1):
    """[2, 4] weights from the valid tokens of each row (0 on padding)."""
    return np.array([list(row0) + [0.0] * (4 - len(row0)), list(row1) + [0.0] * (4 - len(row1))], np.float32)


# level -> raw w per valid token (sequence: the product 3·0.5·1.5 = 2.25 and 0.25·1.2 = 0.3 on every token)
RAW = {"token": _rows([3, 0.5, 1.5], [0.25, 1.2]),
       "sequence": _rows([2.25] * 3, [0.3] * 2),
       "geometric": _rows([GEO0] * 3, [GEO1] * 2)}
# (correction, level) -> (weight, masked_frac, truncated_frac), with C = 2 and mask_low = 0.2
EXPECTED = {
    ("none", "token"): (_rows([1, 1, 1], [1, 1]), 0.0, 0.0),
    ("is", "token"): (RAW["token"], 0.0, 0.0),
    ("tis", "token"): (_rows([2, 0.5, 1.5], [0.25, 1.2]), 0.0, 1 / 5),  # 3 -> C
    ("mask", "token"): (_rows([0, 0.5, 1.5], [0.25, 1.2]), 1 / 5, 0.0),  # 3 > C leaves; 0.25 >= 0.2 stays
    ("none", "sequence"): (_rows([1, 1, 1], [1, 1]), 0.0, 0.0),
    ("is", "sequence"): (RAW["sequence"], 0.0, 0.0),
    ("tis", "sequence"): (_rows([2, 2, 2], [0.3, 0.3]), 0.0, 3 / 5),
    ("mask", "sequence"): (_rows([0, 0, 0], [0.3, 0.3]), 3 / 5, 0.0),  # the whole first sequence leaves
    ("none", "geometric"): (_rows([1, 1, 1], [1, 1]), 0.0, 0.0),
    ("is", "geometric"): (RAW["geometric"], 0.0, 0.0),
    ("tis", "geometric"): (RAW["geometric"], 0.0, 0.0),  # both under C
    ("mask", "geometric"): (RAW["geometric"], 0.0, 0.0),  # both inside [0.2, 2]
}
RATIO_MEAN = {"token": (3 + 0.5 + 1.5 + 0.25 + 1.2) / 5, "sequence": (3 * 2.25 + 2 * 0.3) / 5,
              "geometric": (3 * GEO0 + 2 * GEO1) / 5}
RATIO_MAX = {"token": 3.0, "sequence": 2.25, "geometric": GEO0}


@pytest.mark.parametrize("correction, level", sorted(EXPECTED))
def test_importance_weights_and_metrics_by_hand(correction, level):
    cfg = OffPolicyConfig(correction=correction, level=level, **knobs(correction))
    weight, metrics = importance_weights(PROX_BxC, BEHAV_BxC, VALID_BxC, cfg)
    want, masked_frac, truncated_frac = EXPECTED[correction, level]
    assert weight.dtype == jnp.float32 and np.all(np.isfinite(weight))
    np.testing.assert_allclose(weight, want, rtol=1e-5)
    np.testing.assert_allclose(metrics["off_policy/is_ratio_mean"], RATIO_MEAN[level], rtol=1e-5)
    np.testing.assert_allclose(metrics["off_policy/is_ratio_max"], RATIO_MAX[level], rtol=1e-5)
    np.testing.assert_allclose(metrics["off_policy/masked_frac"], masked_frac, rtol=1e-6)
    np.testing.assert_allclose(metrics["off_policy/truncated_frac"], truncated_frac, rtol=1e-6)


def test_padding_values_and_huge_log_ratios_do_not_matter():
    """Whatever the padding holds, the weights of the valid tokens are the same; a log-weight past 20 is
    clamped (a sequence of two e^15 tokens weighs e^20, not inf), so nothing overflows."""
    cfg = OffPolicyConfig(correction="is", level="sequence")
    padded = importance_weights(PROX_BxC, BEHAV_BxC, VALID_BxC, cfg)[0]
    zeros = importance_weights(jnp.where(VALID_BxC, PROX_BxC, 0.0), jnp.where(VALID_BxC, BEHAV_BxC, 7.0),
                               VALID_BxC, cfg)[0]
    np.testing.assert_array_equal(padded, zeros)
    huge, metrics = importance_weights(jnp.array([[15.0, 15.0]]), jnp.zeros((1, 2)), jnp.ones((1, 2), bool), cfg)
    np.testing.assert_allclose(huge, [[math.exp(20.0)] * 2], rtol=1e-5)
    assert all(np.isfinite(float(v)) for v in metrics.values())


# The loss: A = +1 / -1, the current policy equal to the proximal one (the first pass: r = 1, no clipping).
ADV_B = jnp.array([1.0, -1.0])
LOGP_BxC = jnp.where(VALID_BxC, PROX_BxC, -jnp.inf)


@pytest.mark.parametrize("policy_loss", ["ppo_clip", "gspo", "cispo", "sapo"])
@pytest.mark.parametrize("jit", [False, True])
def test_correction_none_gives_todays_loss_bit_for_bit(policy_loss, jit):
    cfg = GRPOLossConfig(policy_loss=policy_loss)
    logp = LOGP_BxC + 0.1 * VALID_BxC  # r = e^0.1: some tokens clipped

    def f(lp, behaviour):
        kw = {} if behaviour is None else dict(behaviour_logp_BxC=behaviour)
        return grpo_loss(lp, PROX_BxC, ADV_B, VALID_BxC, cfg, **kw)

    run = jax.value_and_grad(f, has_aux=True)
    run = jax.jit(run) if jit else run
    (today, today_m), today_g = run(logp, None)
    (loss, metrics), grad = run(logp, BEHAV_BxC)
    np.testing.assert_array_equal(loss, today)
    np.testing.assert_array_equal(grad, today_g)
    for k, v in today_m.items():
        np.testing.assert_array_equal(metrics[k], v)
    assert set(metrics) - set(today_m) == {"off_policy/is_ratio_mean", "off_policy/is_ratio_max",
                                           "off_policy/masked_frac", "off_policy/truncated_frac"}


def test_the_gradient_is_scaled_by_the_weight_and_none_flows_through_it():
    """ppo_clip at r = 1, token-mean over 5 tokens: d loss / d logp_t = -A·r / 5 · weight_t."""
    loss_of = lambda correction, lp, prox, behav: grpo_loss(  # noqa: E731
        lp, prox, ADV_B, VALID_BxC, GRPOLossConfig(off_policy=OffPolicyConfig(correction=correction, **knobs(correction))),
        behaviour_logp_BxC=behav)[0]
    plain = jax.grad(loss_of, argnums=1)("none", LOGP_BxC, PROX_BxC, BEHAV_BxC)
    np.testing.assert_allclose(plain, -np.array([[1, 1, 1, 0], [-1, -1, 0, 0]]) / 5, rtol=1e-6)
    tis = jax.grad(loss_of, argnums=1)("tis", LOGP_BxC, PROX_BxC, BEHAV_BxC)
    np.testing.assert_allclose(tis, plain * EXPECTED["tis", "token"][0], rtol=1e-6)
    mask = jax.grad(loss_of, argnums=1)("mask", LOGP_BxC, PROX_BxC, BEHAV_BxC)
    np.testing.assert_allclose(mask, plain * EXPECTED["mask", "token"][0], rtol=1e-6)
    assert mask[0, 0] == 0.0  # w = 3 > C: the token leaves the loss
    # The weight is a constant: nothing reaches the behaviour log-probs, and with proximal = the policy itself
    # (no stop-gradient) the ratio is 1 everywhere, so the gradient is exactly 0.
    for correction in ("is", "tis", "mask"):
        behav_grad = jax.grad(loss_of, argnums=3)(correction, LOGP_BxC, PROX_BxC, BEHAV_BxC)
        assert not np.any(np.asarray(behav_grad))
        same = jax.grad(lambda lp, c=correction: loss_of(c, lp, lp, BEHAV_BxC))(LOGP_BxC)
        assert not np.any(np.asarray(same))


def test_the_loss_value_by_hand_with_tis():
    """r = 1: pg_t = -A·w_t, token-mean: (-(2 + 0.5 + 1.5) + (0.25 + 1.2)) / 5 = -2.55 / 5."""
    cfg = GRPOLossConfig(off_policy=OffPolicyConfig(correction="tis", **knobs("tis")))
    loss, metrics = grpo_loss(LOGP_BxC, PROX_BxC, ADV_B, VALID_BxC, cfg, behaviour_logp_BxC=BEHAV_BxC)
    np.testing.assert_allclose(loss, -2.55 / 5, rtol=1e-6)
    np.testing.assert_allclose(metrics["off_policy/truncated_frac"], 1 / 5)


def test_coupled_takes_the_ratio_against_the_behaviour_log_probs():
    cfg = GRPOLossConfig(off_policy=OffPolicyConfig(objective="coupled"))
    f = lambda lp, c, old, **kw: grpo_loss(lp, old, ADV_B, VALID_BxC, c, **kw)  # noqa: E731
    (loss, metrics), grad = jax.value_and_grad(f, has_aux=True)(LOGP_BxC, cfg, PROX_BxC, behaviour_logp_BxC=BEHAV_BxC)
    (want, want_m), want_g = jax.value_and_grad(f, has_aux=True)(LOGP_BxC, GRPOLossConfig(), BEHAV_BxC)
    np.testing.assert_array_equal(loss, want)
    np.testing.assert_array_equal(grad, want_g)
    # ratios r = w = [3, 0.5, 1.5 | 0.25, 1.2], clip range [0.8, 1.28]: A > 0 clips r > 1.28 (3 and 1.5), A < 0
    # clips r < 0.8 (0.25). ppo_kl = mean(behav - logp) = -mean(log w).
    np.testing.assert_allclose(metrics["actor/pg_clipfrac"], 3 / 5)
    np.testing.assert_allclose(metrics["actor/ppo_kl"], -LN(3 * 0.5 * 1.5 * 0.25 * 1.2) / 5, rtol=1e-5)
    np.testing.assert_allclose(metrics["actor/ppo_kl"], want_m["actor/ppo_kl"])
    # pg: A = +1: -1.28, -0.5, -1.28; A = -1: max(0.25, 0.8) = 0.8, 1.2 -> (-3.06 + 2.0) / 5
    np.testing.assert_allclose(metrics["actor/pg_loss"], -1.06 / 5, rtol=1e-5)


def test_bad_settings_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="correction='none'"):
        OffPolicyConfig(objective="coupled", correction="tis")
    for bad, name in [(dict(cap=0.5), "cap"), (dict(mask_low=1.0), "mask_low"), (dict(mask_low=-0.1), "mask_low"),
                      (dict(level="batch"), "level"), (dict(correction="vtrace"), "correction")]:
        with pytest.raises(ValueError, match=name):
            OffPolicyConfig(**bad)
    for off in (OffPolicyConfig(objective="coupled"), OffPolicyConfig(correction="tis")):
        with pytest.raises(ValueError, match="behaviour_logp_BxC"):
            grpo_loss(LOGP_BxC, PROX_BxC, ADV_B, VALID_BxC, GRPOLossConfig(off_policy=off))


def test_settings_that_would_have_no_effect_are_refused():
    for unused in (dict(cap=3.0), dict(mask_low=0.5, correction="tis"), dict(cap=3.0, correction="is")):
        with pytest.raises(ValueError, match="no effect"):
            OffPolicyConfig(**unused)
    OffPolicyConfig(correction="mask", level="sequence", cap=3.0, mask_low=0.5)  # all of them used
    with pytest.raises(ValueError, match="gspo"):  # GSPO's ratio is per sequence: so must its weight be
        GRPOLossConfig(policy_loss="gspo", off_policy=OffPolicyConfig(correction="tis"))
    GRPOLossConfig(policy_loss="gspo", off_policy=OffPolicyConfig(correction="tis", level="geometric"))


# Through the train step's loss, on a tiny random model.
TINY = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                   head_dim=8)


def _model_and_batch():
    """LoRA on a tiny model, and a batch whose old log-probs are a stale -1 on every token."""
    params = init_params(TINY, jax.random.key(0), std=0.2)
    lora = jax.tree.map(lambda a: a + 0.05, init_lora(TINY, LoraConfig(rank=2), jax.random.key(1)))
    rng = np.random.default_rng(0)
    b, g, c = 2, 2, 8
    mask = jnp.asarray(np.arange(c)[None, None] < np.array([[3, 8], [5, 6]])[..., None])
    tokens = jnp.where(mask, jnp.asarray(rng.integers(3, 64, (b, g, c)), jnp.int32), 0)
    batch = RolloutBatch(jnp.asarray(rng.integers(3, 64, (b, 5)), jnp.int32), jnp.ones((b, 5), bool), tokens, mask,
                         jnp.where(mask, -1.0, 0.0), jnp.array([[1.0, -1.0], [0.5, -0.5]]), jnp.zeros((b, g), bool))
    logp, _ = completion_logprobs(params, TINY, batch.prompt_BxP, batch.prompt_mask_BxP, tokens, lora=lora,
                                  remat=False, completion_mask_BxGxC=mask)
    return params, lora, batch, jnp.where(mask, logp, 0.0)


def _settings(correction, use_old_logp):
    loss_cfg = GRPOLossConfig(off_policy=OffPolicyConfig(correction=correction))
    return StepSettings(TINY, loss_cfg, lora_scale=1.0, temperature=1.0, dtype="float32", use_old_logp=use_old_logp)


def _loss_and_grad(params, lora, batch, correction, use_old_logp):
    s = _settings(correction, use_old_logp)
    return jax.value_and_grad(lambda tr: batch_loss(tr, params, None, batch, s), has_aux=True)(lora)


def _loss(params, lora, batch, correction, use_old_logp):
    return batch_loss(lora, params, None, batch, _settings(correction, use_old_logp))


def _same(x, y):
    return all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y)))


# Slow (40 s of compiles); the default suite keeps the weights' math (test_importance_weights_and_metrics_by_hand)
# and the behaviour log-probs reaching the trainer's batch (test_the_trainer_keeps_the_samplers_log_probs_as_behaviour).
@pytest.mark.slow
def test_behaviour_log_probs_reach_the_step_loss_in_both_paths():
    params, lora, stale, logp = _model_and_batch()
    mask = stale.completion_mask_BxGxC
    # One update: the proximal policy is the current one, the behaviour log-probs sit in old_logp.
    (none, m_none), g_none = _loss_and_grad(params, lora, stale, "none", False)
    (tis, m_tis), g_tis = _loss_and_grad(params, lora, stale, "tis", False)
    assert float(none) != float(tis) and not _same(g_none, g_tis)
    w = np.exp(np.asarray(logp) + 1.0)[np.asarray(mask)]  # π_θ / e^-1 on every loss token
    np.testing.assert_allclose(m_tis["off_policy/is_ratio_mean"], w.mean(), rtol=1e-5)
    np.testing.assert_allclose(m_tis["off_policy/truncated_frac"], np.mean(w > 2.0))
    fresh = stale._replace(old_logp_BxGxC=logp)  # behaviour = proximal: weight 1, the update is none's
    (none, _), g_none = _loss_and_grad(params, lora, fresh, "none", False)
    (tis, m_tis), g_tis = _loss_and_grad(params, lora, fresh, "tis", False)
    np.testing.assert_allclose(tis, none, rtol=1e-6)
    # (w is 1 up to the rounding between this eager forward and the jitted one)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7), g_tis, g_none)
    np.testing.assert_allclose(m_tis["off_policy/is_ratio_mean"], 1.0, rtol=1e-5)
    # mu > 1: old_logp holds the recomputed proximal log-probs and behaviour_logp the sampler's (Trainer.update).
    recomputed = stale._replace(old_logp_BxGxC=logp, behaviour_logp_BxGxC=stale.old_logp_BxGxC)
    none, _ = _loss(params, lora, recomputed, "none", True)
    tis, m_tis = _loss(params, lora, recomputed, "tis", True)
    assert float(none) != float(tis)
    np.testing.assert_allclose(m_tis["off_policy/is_ratio_mean"], w.mean(), rtol=1e-5)
    same = recomputed._replace(behaviour_logp_BxGxC=logp).with_loss_mask()
    assert float(_loss(params, lora, same, "tis", True)[0]) == float(_loss(params, lora, same, "none", True)[0])


def test_coupled_one_update_uses_the_behaviour_log_probs_not_the_current_policy():
    """One update per step, coupled: old = the sampler's log-probs, as if they were the trainer's old_logp."""
    params, lora, stale, _ = _model_and_batch()
    coupled = GRPOLossConfig(off_policy=OffPolicyConfig(objective="coupled"))
    one = StepSettings(TINY, coupled, lora_scale=1.0, temperature=1.0, dtype="float32")
    old = StepSettings(TINY, GRPOLossConfig(), lora_scale=1.0, temperature=1.0, dtype="float32", use_old_logp=True)
    got, got_m = batch_loss(lora, params, None, stale, one)
    want, want_m = batch_loss(lora, params, None, stale, old)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(got_m["actor/ppo_kl"], want_m["actor/ppo_kl"], rtol=1e-6)
    assert abs(float(got_m["actor/ppo_kl"])) > 0.1  # the ratio is not 1: old is not stop_gradient(logp)


def test_with_loss_mask_fills_the_behaviour_log_probs():
    _, _, stale, logp = _model_and_batch()
    filled = stale.with_loss_mask()
    assert filled.behaviour_logp_BxGxC is stale.old_logp_BxGxC
    kept = stale._replace(behaviour_logp_BxGxC=logp).with_loss_mask()
    assert kept.behaviour_logp_BxGxC is logp and kept.loss_mask_BxGxC is stale.completion_mask_BxGxC


class _Bytes:
    eos_ids, pad_id = (1,), 0

    def apply_chat_template(self, messages, tools=None):
        return [2] + [3 + b for b in messages[-1]["content"].encode()]

    def decode(self, ids):
        return "".join(chr(i - 3) for i in ids if 3 <= i < 259)


class _Shorter:
    needs_reference = False

    def score_batch(self, examples, completions):
        return [RewardResult(1.0 / (1.0 + len(c))) for c in completions]


@pytest.mark.parametrize("objective", ["decoupled", "coupled"])
def test_the_trainer_keeps_the_samplers_log_probs_as_behaviour(objective):
    """mu = 2 under top-k: the recomputed (proximal) log-probs differ from the sampler's, so the first update's
    IS ratio is not 1. Decoupled: its PPO ratio is 1 (against the proximal policy); coupled: it is not."""
    tiny = dataclasses.replace(TINY, vocab_size=300, max_position_embeddings=256)
    off = OffPolicyConfig(objective=objective, correction="tis" if objective == "decoupled" else "none")
    cfg = TrainConfig(model=ModelSpec(name="unused", compute_dtype="float32"), reward=RewardSpec("unused"),
                      batch_size=2, ppo_epochs=2, optimizer=OptimizerConfig(learning_rate=1e-2),
                      sampling=SamplingConfig(samples_per_prompt=4, max_new_tokens=12, temperature=0.7, top_k=5),
                      loss=GRPOLossConfig(off_policy=off))
    mesh = make_mesh(MeshConfig(1, 1, 1), devices=jax.devices()[:1])
    trainer, state = build_trainer(cfg, tiny, init_params(tiny, jax.random.key(0), std=0.3), _Bytes(), _Shorter(),
                                   mesh, steps=4)
    calls, step_fn = [], trainer.step_fn

    def recording(*args):
        new_state, metrics = step_fn(*args)
        calls.append({k: float(v) for k, v in metrics.items()})
        return new_state, metrics

    trainer = dataclasses.replace(trainer, step_fn=recording)
    examples = [Example(f"e{i}", [{"role": "user", "content": "x" * (i + 2)}]) for i in range(2)]
    trainer.step(state, examples, jax.random.key(3))
    first = calls[0]
    assert first["off_policy/is_ratio_mean"] < 0.99  # top-k renormalises: π_behav > π_prox on sampled tokens
    if objective == "decoupled":
        assert abs(first["actor/ppo_kl"]) < 1e-5
    else:
        assert first["actor/ppo_kl"] > 1e-2  # mean(log π_behav - log π_θ) with π_θ = π_prox at the first update
