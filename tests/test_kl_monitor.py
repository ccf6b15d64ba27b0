"""KL to the reference, watched even when beta = 0: the measurement, the alarm that reads it, the plot."""

from __future__ import annotations

import types

import jax
import numpy as np
import pytest

from rft_jax.data.example import Example
from rft_jax.grpo import GRPOLossConfig
from rft_jax.model import ModelConfig, init_params
from rft_jax.model.lora import LoraConfig, init_lora
from rft_jax.monitoring import AlarmConfig, MetricHistory, names
from rft_jax.monitoring.alarms import kl_growth
from rft_jax.rollout.batch import pack_groups
from rft_jax.rollout.engine import Rollouts
from rft_jax.rollout.episode import Episode
from rft_jax.train.hooks import StepContext
from rft_jax.train.kl_monitor import kl_monitor_hook, reference_kl
from rft_jax.train.step import StepSettings

TINY = ModelConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_layers=2, num_heads=2, num_kv_heads=1,
                   head_dim=8, max_position_embeddings=64)
PARAMS = init_params(TINY, jax.random.key(0), std=0.3)
EX = Example("e", [{"role": "user", "content": "q"}])


def _groups(rng):
    return [[Episode.single_turn(EX, rng.integers(3, 60, 5), rng.integers(3, 60, n), np.zeros(n), policy_version=0,
                                 finish_reason="stop") for n in (3, 7)] for _ in range(3)]


def test_reference_kl_is_zero_at_the_start_and_grows_with_the_adapters():
    rng = np.random.default_rng(0)
    batch = pack_groups(_groups(rng), np.zeros((3, 2)), pad_id=0, max_completion_tokens=16)
    s = StepSettings(TINY, GRPOLossConfig(), lora_scale=2.0, temperature=1.0, dtype="float32")
    fresh = init_lora(TINY, LoraConfig(rank=2), jax.random.key(1))  # B = 0: exactly the base model
    assert float(reference_kl(PARAMS, fresh, PARAMS, batch, s)) == pytest.approx(0.0, abs=1e-6)
    moved = jax.tree.map(lambda x: x + 0.03, fresh)
    kl = float(reference_kl(PARAMS, moved, PARAMS, batch, s))
    assert kl > 1e-3
    # k3 over the policy tokens only: by hand from the two forwards' log-probs
    from rft_jax.model.logprobs import completion_logprobs  # noqa: PLC0415

    args = (TINY, batch.prompt_BxP, batch.prompt_mask_BxP, batch.completion_BxGxC)
    lp, _ = completion_logprobs(PARAMS, *args, lora=moved, lora_scale=2.0, remat=False)
    ref, _ = completion_logprobs(PARAMS, *args, remat=False)
    x = np.asarray(ref - lp)[np.asarray(batch.loss_mask_BxGxC)]
    assert np.abs(x).max() < 2  # inside the estimator's clamps
    assert kl == pytest.approx(float(np.mean(np.exp(x) - x - 1)), rel=1e-4)


def test_the_hook_logs_it_and_the_kl_alarm_reads_it_when_beta_is_zero():
    rng = np.random.default_rng(1)
    s = StepSettings(TINY, GRPOLossConfig(), lora_scale=2.0, temperature=1.0, dtype="float32")
    lora = jax.tree.map(lambda x: x + 0.5, init_lora(TINY, LoraConfig(rank=2), jax.random.key(1)))
    trainer = types.SimpleNamespace(frozen=PARAMS, reference=None, step_settings=s,
                                    tokenizer=types.SimpleNamespace(pad_id=0),
                                    cfg=types.SimpleNamespace(sampling=types.SimpleNamespace(max_new_tokens=16)))
    hook = kl_monitor_hook(trainer, every=5)
    ctx = StepContext(5, 10, types.SimpleNamespace(trainable=lora), {}, Rollouts(_groups(rng), {}))
    assert hook.due(ctx) and not hook.due(StepContext(4, 10, None, {}, None))
    hook.fn(ctx)
    assert ctx.metrics[names.REF_KL] > 0
    history = MetricHistory()
    for step in range(1, 6):
        history.append(step, {names.REF_KL: 2.0})  # no actor/kl_loss: beta = 0
    assert "above the ceiling" in kl_growth(history, AlarmConfig(kl_ceiling=1.0))
