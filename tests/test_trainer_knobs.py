"""The trainer is correct under every knob: PPO passes and mini-batches, the schedule, weight decay, LoRA's
init, the export's base, the config's refusals, the metrics of shaped rewards."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rft_jax.checkpoint.export import export_run
from rft_jax.data.example import Example
from rft_jax.grpo import AdvantageConfig, OptimizerConfig, make_optimizer, make_schedule
from rft_jax.model import ModelConfig, init_params
from rft_jax.model.lora import LoraConfig, init_lora
from rft_jax.model.registry import ModelSpec, load_model
from rft_jax.parallel import MeshConfig, make_mesh
from rft_jax.rewards import RewardResult
from rft_jax.rewards.spec import RewardSpec
from rft_jax.rollout.batch import advantages, shaped_rewards
from rft_jax.rollout.engine import Rollouts
from rft_jax.rollout.episode import Episode
from rft_jax.rollout.metrics import rollout_metrics
from rft_jax.train import setup
from rft_jax.train.config import SamplingConfig, TrainConfig
from rft_jax.train.trainer import build_trainer

TINY = ModelConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                   head_dim=8, max_position_embeddings=256)
EXAMPLE = Example("ex", [{"role": "user", "content": "q"}], reference_answer="a")


def _config(**overrides) -> TrainConfig:
    cfg = TrainConfig(model=ModelSpec(name="unused", compute_dtype="float32"), reward=RewardSpec("unused"),
                      batch_size=2, sampling=SamplingConfig(samples_per_prompt=4, max_new_tokens=12),
                      optimizer=OptimizerConfig(learning_rate=1e-2))
    return dataclasses.replace(cfg, **overrides)


class _ByteTokenizer:
    eos_ids, pad_id = (1,), 0

    def apply_chat_template(self, messages, tools=None):
        return [2] + [3 + b for b in messages[-1]["content"].encode()]

    def decode(self, ids):
        return bytes(i - 3 for i in ids if 3 <= i < 259).decode("latin-1")


class _LengthReward:
    needs_reference = False

    def score_batch(self, examples, completions):
        return [RewardResult(1.0 / (1.0 + len(c))) for c in completions]


@pytest.mark.parametrize("minibatches", [1, 2])
def test_the_first_ppo_pass_has_ratio_one_under_top_k_and_temperature(minibatches):
    """mu = 2 passes (of 1 or 2 mini-batches): the old log-probs are the training forward's, not the
    sampler's (top-k renormalised, at a temperature), so the very first update sees ratio 1."""
    cfg = _config(ppo_epochs=2, sampling=SamplingConfig(samples_per_prompt=4, max_new_tokens=12, temperature=0.7,
                                                        top_k=5))
    if minibatches > 1:
        cfg = dataclasses.replace(cfg, ppo_minibatches=minibatches)
    mesh = make_mesh(MeshConfig(1, 1, 1), devices=jax.devices()[:1])
    trainer, state = build_trainer(cfg, TINY, init_params(TINY, jax.random.key(0), std=0.3), _ByteTokenizer(),
                                   _LengthReward(), mesh, steps=4)
    calls = []
    step_fn = trainer.step_fn

    def recording(*args):
        new_state, metrics = step_fn(*args)
        calls.append({k: float(v) for k, v in metrics.items()})
        return new_state, metrics

    trainer = dataclasses.replace(trainer, step_fn=recording)
    examples = [Example(f"e{i}", [{"role": "user", "content": "x" * (i + 2)}]) for i in range(2)]
    state, metrics, _ = trainer.step(state, examples, jax.random.key(3))
    updates = 2 * minibatches
    assert len(calls) == updates and int(state.step) == updates and state.step // updates == 1
    assert abs(calls[0]["actor/ppo_kl"]) < 1e-5 and calls[0]["actor/pg_clipfrac"] == 0.0
    assert abs(calls[minibatches]["actor/ppo_kl"]) > 1e-7  # the second pass: the policy has moved since
    assert metrics["actor/lr"] == pytest.approx(1e-2)


def test_the_schedule_counts_rl_steps_not_optimizer_updates():
    """With b1 = b2 = 0 and no decay, an Adam update moves a parameter by exactly the learning rate:
    the 2 updates of RL step k both use schedule(k), and the cosine lasts the whole run."""
    cfg = OptimizerConfig(learning_rate=1.0, warmup_steps=1, schedule="cosine", min_lr_ratio=0.1, b1=0.0, b2=0.0,
                          eps=1e-12, weight_decay=0.0, max_grad_norm=None)
    schedule = make_schedule(cfg, total_steps=4)
    opt = make_optimizer(cfg, total_steps=4, updates_per_step=2)
    params = {"w": jnp.zeros((1, 1))}
    opt_state = opt.init(params)
    moves = []
    for _ in range(8):
        updates, opt_state = opt.update({"w": jnp.ones((1, 1))}, opt_state, params)
        moves.append(-float(updates["w"][0, 0]))
    np.testing.assert_allclose(moves, [float(schedule(i // 2)) for i in range(8)], rtol=1e-5)
    assert moves[-1] > 0.3  # counted by updates, the last 4 would sit at the floor 0.1: over halfway too early


def test_weight_decay_spares_norms_and_biases_of_the_stacked_layers():
    cfg = dataclasses.replace(TINY, qkv_bias=True, qk_norm=True, tie_embeddings=False)
    params = init_params(cfg, jax.random.key(0))
    params = jax.tree.map(lambda p: p + 1.0, params)  # every leaf nonzero, so decay would show
    opt = make_optimizer(OptimizerConfig(learning_rate=0.1, weight_decay=0.5, max_grad_norm=None), total_steps=1)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = opt.update(zeros, opt.init(params), params)  # zero gradient: the update is the decay alone
    decayed = {jax.tree_util.keystr(k): bool(jnp.any(u != 0)) for k, u in jax.tree_util.tree_leaves_with_path(updates)}
    assert {k for k, d in decayed.items() if not d} == {
        "['final_norm']", "['layers']['attn_norm']", "['layers']['mlp_norm']", "['layers']['q_norm']",
        "['layers']['k_norm']", "['layers']['q']['b']", "['layers']['k']['b']", "['layers']['v']['b']"}
    assert decayed["['layers']['q']['w']"] and decayed["['embed']"] and decayed["['unembed']"]
    # LoRA's B is a matrix named "b": it is decayed like A.
    lora = jax.tree.map(lambda p: p + 1.0, init_lora(TINY, LoraConfig(rank=2), jax.random.key(1)))
    updates, _ = opt.update(jax.tree.map(jnp.zeros_like, lora), opt.init(lora), lora)
    assert all(bool(jnp.all(u != 0)) for u in jax.tree.leaves(updates))


def test_lora_a_is_initialised_as_peft_does():
    """PEFT: kaiming_uniform_(a=sqrt(5)) on A [r, in], i.e. U(-1/sqrt(in), 1/sqrt(in)), std 1/sqrt(3 in)."""
    cfg = dataclasses.replace(TINY, hidden_size=256, intermediate_size=512, num_heads=8, head_dim=32)
    lora = init_lora(cfg, LoraConfig(rank=16), jax.random.key(0))
    for name, (n_in, _) in (("q", (256, 256)), ("down", (512, 256))):
        a = np.asarray(lora["layers"][name]["a"])
        bound = 1 / np.sqrt(n_in)
        assert np.abs(a).max() <= bound and np.abs(a).max() > 0.99 * bound
        assert a.std() == pytest.approx(bound / np.sqrt(3), rel=0.03)
        assert not np.asarray(lora["layers"][name]["b"]).any()


def test_one_sample_per_prompt_is_refused():
    with pytest.raises(ValueError, match="GRPO.*group"):
        _config(sampling=SamplingConfig(samples_per_prompt=1))
    with pytest.raises(ValueError, match="ppo_minibatches=4"):
        _config(ppo_minibatches=4)  # 2 prompts do not split into 4 mini-batches


def test_zero_std_frac_counts_groups_of_equal_shaped_rewards():
    """Equal raw rewards, but one completion is overlong and penalised: the group has signal."""
    cfg = AdvantageConfig(overlong_buffer_len=8, overlong_penalty_factor=1.0)
    group = [Episode.single_turn(EXAMPLE, [5], [3] * n, [-0.1] * n, policy_version=0, finish_reason="stop")
             for n in (4, 16)]
    for e in group:
        e.reward = 1.0
    r = Rollouts([group], {})
    shaped = shaped_rewards(r.groups, cfg, 16)
    assert shaped[0, 0] != shaped[0, 1]
    metrics = rollout_metrics(r, advantages(r.groups, cfg, 16), shaped)
    assert metrics["batch/zero_std_frac"] == 0.0


def test_the_adapter_of_an_init_from_run_names_the_base_it_applies_to(tmp_path):
    cfg = _config(init_from="/runs/sft/checkpoints/latest/8")
    params = init_params(TINY, jax.random.key(0), std=0.2)
    lora = jax.tree.map(lambda p: p + 0.1, init_lora(TINY, LoraConfig(rank=2, targets=("q", "v")), jax.random.key(1)))
    cfg = dataclasses.replace(cfg, lora=LoraConfig(rank=2, targets=("q", "v")))
    tokenizer = SimpleNamespace(eos_ids=(1,), pad_id=0, hf=SimpleNamespace(save_pretrained=lambda folder: None))
    export_run(cfg, TINY, params, lora, tokenizer, tmp_path, base_origin=setup.base_origin(cfg, tmp_path))
    doc = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert doc["base_model_name_or_path"] == str((tmp_path / "base").absolute())
    origin = json.loads((tmp_path / "base" / "origin.json").read_text())
    assert origin == {"model": "unused", "started_from": "init_from /runs/sft/checkpoints/latest/8"}
    _, base = load_model(str(tmp_path / "base"), dtype=jnp.float32)
    jax.tree.map(np.testing.assert_array_equal, base, params)
    # A run from the published model itself names it, and writes no base.
    export_run(_config(lora=cfg.lora), TINY, params, lora, tokenizer, tmp_path / "plain")
    doc = json.loads((tmp_path / "plain" / "adapter" / "adapter_config.json").read_text())
    assert doc["base_model_name_or_path"] == "unused" and not (tmp_path / "plain" / "base").exists()
