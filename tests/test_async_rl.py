"""Asynchronous RL end to end on a tiny random model: the staleness bound, K = 0 against the synchronous run,
rewards that hang or raise, sub-meshes, and resuming a run that died."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from rft_jax.rewards.process_pool import RewardWorkersConfig
from rft_jax.rewards.spec import RewardSpec
from rft_jax.train import loop
from rft_jax.train.async_loop import PolicyBoard, Stopped, staleness_metrics
from rft_jax.train.config import (
    AsyncConfig,
    CheckpointConfig,
    DataConfig,
    DynamicSamplingConfig,
    SamplingConfig,
    TaskData,
)
from rft_jax.train.hooks import Hook
from rft_jax.train.loop import run
from rft_jax.train.trainer import Trainer, batch_indices
from tests.test_train_run import tiny_config, tiny_model  # noqa: F401  (a fixture)


def _metrics(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _adapter(out_dir: Path) -> dict[str, np.ndarray]:
    return load_file(str(out_dir / "export" / "adapter" / "adapter_model.safetensors"))


def _async(k: int, **kw) -> AsyncConfig:
    return AsyncConfig(enabled=True, max_staleness=k, **kw)


def test_the_board_hands_out_the_newest_policy_only_once_it_is_fresh_enough():
    board = PolicyBoard()
    got = []
    waiter = threading.Thread(target=lambda: got.append(board.wait_for(2)))
    waiter.start()
    board.publish(1, {"v": 1})
    time.sleep(0.05)
    assert got == []  # version 1 is too stale for a wait on 2
    board.publish(3, {"v": 3})
    waiter.join(1)
    assert got == [(3, {"v": 3})]  # the newest, not the first fresh enough
    board.close()
    with pytest.raises(Stopped):
        board.wait_for(9)


def test_staleness_metrics_histogram():
    class E:
        def __init__(self, v):
            self.policy_version = v

    m = staleness_metrics(5, [[E(5), E(4)], [E(4), E(3)]], max_staleness=2)
    assert m["async/staleness_mean"] == 1.0 and m["async/staleness_max"] == 2.0
    assert (m["async/staleness_share/0"], m["async/staleness_share/1"], m["async/staleness_share/2"]) == (
        0.25, 0.5, 0.25)


KNOBS = {  # the default path, and dynamic sampling (extra rounds in the producer) with two PPO passes
    "default": {},
    "dynamic_ppo": dict(reward=RewardSpec("tests.toy_rewards:coin"), ppo_epochs=2,
                        sampling=SamplingConfig(samples_per_prompt=2, max_new_tokens=16),
                        dynamic_sampling=DynamicSamplingConfig(enabled=True, max_rounds=2)),
}


@pytest.mark.parametrize("knobs", ["default", pytest.param("dynamic_ppo", marks=pytest.mark.slow)])
def test_staleness_zero_reproduces_the_synchronous_run_bitwise(tiny_model, tmp_path, knobs):  # noqa: F811
    sync = tiny_config(tiny_model, str(tmp_path / "sync"), max_steps=3, **KNOBS[knobs])
    run(sync)
    run(dataclasses.replace(sync, out_dir=str(tmp_path / "async"), asynchronous=_async(0)))
    a, b = _adapter(tmp_path / "sync"), _adapter(tmp_path / "async")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    steps = 0
    for m_sync, m_async in zip(_metrics(tmp_path / "sync"), _metrics(tmp_path / "async"), strict=True):
        same = {k for k in m_sync if not k.startswith(("timing_s/", "perf/", "time", "eval_seconds"))}
        assert {k: m_sync[k] for k in same} == {k: m_async[k] for k in same}, m_sync["step"]
        if "actor/pg_loss" in m_sync:
            steps += 1
            assert m_async["async/staleness_max"] == 0.0
    assert steps == 3
    if knobs == "dynamic_ppo":  # the producer did sample extra rounds
        assert sum(m.get("dynamic/extra_rounds", 0) for m in _metrics(tmp_path / "async")) > 0


def _record_updates(monkeypatch) -> list[tuple[int, list]]:
    """(RL step of the state being updated, the batch's episodes) of every update from now on."""
    seen = []
    update = Trainer.update

    def recording(self, state, r, active_B=None):
        seen.append((self.rl_step(state), [e for group in r.groups for e in group]))
        return update(self, state, r, active_B)

    monkeypatch.setattr(Trainer, "update", recording)
    return seen


def test_staleness_stays_within_its_bound_while_rewards_hang_or_raise(tiny_model, tmp_path, monkeypatch):  # noqa: F811
    seen = _record_updates(monkeypatch)
    # The reward hangs (30 s) on odd-length completions and raises on lengths divisible by 3. Each sample is
    # its own call, given up after 0.5 s: the trainer waits for rewards, so the producer runs ahead as far
    # as the bound lets it.
    k = 2
    cfg = tiny_config(tiny_model, str(tmp_path), max_steps=5, reward=RewardSpec("tests.toy_rewards:hangs_on_odd"),
                      asynchronous=_async(k), export=False,
                      reward_workers=RewardWorkersConfig(processes=0, threads=4, timeout_s=0.5, chunk_size=1))
    t0 = time.perf_counter()
    run(cfg)
    assert time.perf_counter() - t0 < 150  # no hung call held the run for its 30 s
    assert [step for step, _ in seen] == list(range(5))
    lags = [step - e.policy_version for step, episodes in seen for e in episodes]
    assert min(lags) >= 0 and max(lags) == k
    metrics = [m for m in _metrics(tmp_path) if "async/staleness_max" in m]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5]
    assert max(m["async/staleness_max"] for m in metrics) == k
    errors = [e.error for _, episodes in seen for e in episodes if e.error]
    assert any("timed out" in e for e in errors) and any("raises on lengths" in e for e in errors), errors
    assert any(e.error is None for _, episodes in seen for e in episodes)  # the others were scored
    assert sum(m["reward_pool/timeouts"] > 0 for m in metrics) > 0  # one sample per call: each failed alone


def test_a_failing_producer_stops_the_run_with_its_error(tiny_model, tmp_path, monkeypatch):  # noqa: F811
    from rft_jax.train import async_loop  # noqa: PLC0415

    generate, calls = async_loop.generate_episodes, []

    def fails_on_the_third_batch(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise MemoryError("out of memory while sampling")
        return generate(*args, **kw)

    monkeypatch.setattr(async_loop, "generate_episodes", fails_on_the_third_batch)
    cfg = tiny_config(tiny_model, str(tmp_path), max_steps=5, asynchronous=_async(1), export=False)
    with pytest.raises(RuntimeError, match="rollout producer failed: MemoryError: out of memory while sampling"):
        run(cfg)
    assert [m["step"] for m in _metrics(tmp_path) if "actor/pg_loss" in m] == [1, 2]


def test_sub_meshes_sample_on_their_devices_and_only_adapters_move(tiny_model, tmp_path, monkeypatch):  # noqa: F811
    import jax  # noqa: PLC0415

    from rft_jax.train import async_loop  # noqa: PLC0415

    sampled_on, trained_on = [], []
    generate, update = async_loop.generate_episodes, Trainer.update

    def generate_recording(params, *args, lora=None, **kw):
        sampled_on.append({d for x in jax.tree.leaves((params, lora)) for d in x.devices()})
        return generate(params, *args, lora=lora, **kw)

    def update_recording(self, state, r, active_B=None):
        trained_on.append({d for x in jax.tree.leaves(state.trainable) for d in x.devices()})
        return update(self, state, r, active_B)

    monkeypatch.setattr(async_loop, "generate_episodes", generate_recording)
    monkeypatch.setattr(Trainer, "update", update_recording)
    cfg = tiny_config(tiny_model, str(tmp_path / "lora"), max_steps=2, export=False,
                      asynchronous=_async(0, rollout_devices=4))
    run(cfg)
    devices = jax.devices()
    assert sampled_on and all(d == set(devices[:4]) for d in sampled_on)  # 4 + 4 of the 8 fake devices
    assert trained_on and all(d == set(devices[4:]) for d in trained_on)
    lora = [m for m in _metrics(tmp_path / "lora") if "async/transfer_bytes" in m]
    model_bytes = sum(x.nbytes for x in load_file(str(Path(tiny_model) / "model.safetensors")).values())
    adapter_bytes = {int(m["async/transfer_bytes"]) for m in lora}
    assert len(adapter_bytes) == 1 and 0 < adapter_bytes.pop() < model_bytes / 20  # only the adapters move
    for m in lora:  # K = 0: the rollout devices sampled with exactly the trainer's parameters
        assert m["mismatch/max_abs_logp_diff"] < 1e-3, m["step"]


def test_full_fine_tuning_moves_every_weight_to_the_rollout_devices():
    import jax  # noqa: PLC0415

    from rft_jax.model import ModelConfig, init_params  # noqa: PLC0415
    from rft_jax.parallel import MeshConfig, param_shardings, split_mesh  # noqa: PLC0415
    from rft_jax.train.async_loop import PolicyTransfer, tree_bytes  # noqa: PLC0415

    class FullTrainer:  # what PolicyTransfer reads of a full fine-tuning trainer
        cfg = dataclasses.make_dataclass("Cfg", [("mode", str, "full")])()
        policy = dataclasses.make_dataclass("Policy", [("base", object, None)])()
        policy.sampler_args = staticmethod(lambda state: dict(params=state, lora=None, lora_scale=1.0))

    rollout, train = split_mesh(MeshConfig(), MeshConfig(), 4)
    cfg = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                      head_dim=8)
    params = init_params(cfg, jax.random.key(0))
    params = jax.device_put(params, param_shardings(params, train))
    transfer = PolicyTransfer(FullTrainer(), rollout)
    moved = transfer(params)["params"]
    assert all(x.devices() == set(jax.devices()[:4]) for x in jax.tree.leaves(moved))
    assert transfer.last_bytes == tree_bytes(params)  # every weight, each step
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(moved)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _die_at_step(monkeypatch, step: int) -> None:
    real_hooks = loop.logging_hooks

    def hooks(cfg, writer):
        def die(ctx):
            if ctx.step == step:
                raise RuntimeError("killed")
        return [*real_hooks(cfg, writer), Hook("die", die)]

    monkeypatch.setattr(loop, "logging_hooks", hooks)


def test_a_run_that_died_resumes_without_losing_or_repeating_a_step(tiny_model, tmp_path, monkeypatch):  # noqa: F811
    seen = _record_updates(monkeypatch)
    cfg = tiny_config(tiny_model, str(tmp_path), max_steps=5, asynchronous=_async(1),
                      checkpoint=CheckpointConfig(interval=2), export=False)
    with monkeypatch.context() as m:
        _die_at_step(m, 4)  # after the checkpoint of step 2 (hooks run in order: it dies before saving step 4)
        with pytest.raises(RuntimeError, match="killed"):
            run(cfg)
    kept = [(step, eps) for step, eps in seen if step < 2]  # the updates the checkpoint of step 2 holds
    seen.clear()
    run(dataclasses.replace(cfg, resume=True))
    trained = kept + seen
    assert [step for step, _ in trained] == [0, 1, 2, 3, 4]  # every step once
    ids = [json.loads(line)["id"] for line in (tmp_path / "data" / "train.jsonl").read_text().splitlines()]
    for step, episodes in trained:  # on the prompts the step owns
        assert {e.example.id for e in episodes} == {ids[i] for i in batch_indices(step, 2, len(ids), 0)}, step
    assert min(e.policy_version for e in seen[0][1]) == 2  # the lost batches were sampled again by the checkpoint
    assert [m["step"] for m in _metrics(tmp_path) if "actor/pg_loss" in m] == [1, 2, 3, 4, 5]


@pytest.mark.slow  # three whole runs
def test_with_staleness_zero_a_resumed_run_ends_on_the_same_bits(tiny_model, tmp_path, monkeypatch):  # noqa: F811
    cfg = tiny_config(tiny_model, str(tmp_path / "straight"), max_steps=5, asynchronous=_async(0),
                      checkpoint=CheckpointConfig(interval=2))
    run(cfg)
    died = dataclasses.replace(cfg, out_dir=str(tmp_path / "died"))
    with monkeypatch.context() as m:
        _die_at_step(m, 4)
        with pytest.raises(RuntimeError, match="killed"):
            run(died)
    run(dataclasses.replace(died, resume=True))
    a, b = _adapter(tmp_path / "straight"), _adapter(tmp_path / "died")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.slow  # two whole runs; the default suite stays under 15 minutes
def test_reasoning_mode_and_multi_turn_agents_run_asynchronously(tiny_model, tmp_path):  # noqa: F811
    from rft_jax.data.reasoning import ReasoningConfig  # noqa: PLC0415
    from rft_jax.environments.config import EnvironmentConfig  # noqa: PLC0415
    from rft_jax.grpo import GRPOLossConfig, OffPolicyConfig  # noqa: PLC0415
    from rft_jax.rollout.agent_config import AgentConfig  # noqa: PLC0415

    tis = GRPOLossConfig(off_policy=OffPolicyConfig(correction="tis", level="sequence"))
    reasoning = tiny_config(tiny_model, str(tmp_path / "reasoning"), max_steps=3, export=False, loss=tis,
                            reasoning=ReasoningConfig(mode="on", think_budget=8, answer_budget=8),
                            data=DataConfig(task=TaskData(name="arithmetic", num_train=16, num_val=4, num_test=0),
                                            max_prompt_tokens=256),
                            asynchronous=_async(1))
    run(reasoning)
    agent = tiny_config(tiny_model, str(tmp_path / "agent"), max_steps=3, export=False, loss=tis,
                        agent=AgentConfig(environment=EnvironmentConfig(name="calculator"), max_turns=2,
                                          max_episode_tokens=24),
                        data=DataConfig(task=TaskData(name="arithmetic", num_train=16, num_val=4, num_test=0),
                                        max_prompt_tokens=384),
                        asynchronous=_async(1))
    run(agent)
    for out, key in ((tmp_path / "reasoning", "reasoning/budget_hit_rate"), (tmp_path / "agent", "agent/turns/mean")):
        steps = [m for m in _metrics(out) if "actor/pg_loss" in m]
        assert len(steps) == 3 and all(key in m for m in steps), out
        assert all(m["async/staleness_max"] <= 1 and np.isfinite(m["off_policy/is_ratio_max"]) for m in steps)
        assert all(np.isfinite(m["actor/pg_loss"]) for m in steps)
