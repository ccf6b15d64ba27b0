"""What a run does before its first RL step: measure the base model, warm-start it, check for a signal."""

from __future__ import annotations

import time
from pathlib import Path

import jax

from rft_jax.grpo import TrainState
from rft_jax.parallel import place
from rft_jax.rollout.metrics import signal_metrics
from rft_jax.sft.demos import self_format_demos
from rft_jax.sft.run import train_sft
from rft_jax.sft.step import SFTSettings
from rft_jax.train import setup
from rft_jax.train.evals import run_eval
from rft_jax.train.trainer import Trainer


def check_signal(trainer: Trainer, state: TrainState, val, key: jax.Array) -> dict[str, float]:
    """Sampled groups on validation prompts, through the same rollout path as training."""
    cfg = trainer.cfg
    r = trainer.rollouts(state, val[: min(len(val), 2 * cfg.batch_size)], key)
    return signal_metrics(r, cfg.evaluation.success_threshold)


def warm_start(trainer: Trainer, state: TrainState, train) -> TrainState:
    """Short SFT on demonstrations before RL; RL then starts from these weights with a fresh optimizer."""
    cfg, ws = trainer.cfg, trainer.cfg.warm_start
    t0 = time.perf_counter()
    demos = self_format_demos(key=jax.random.key(cfg.seed + 3), cfg=trainer.model_cfg, tokenizer=trainer.tokenizer,
                              examples=train[-ws.num_demos:], max_new_tokens=cfg.sampling.max_new_tokens,
                              dtype=trainer.policy.dtype, **trainer.policy.sampler_args(state))
    settings = SFTSettings(trainer.model_cfg, cfg.lora.scale if cfg.mode == "lora" else None,
                           str(trainer.policy.dtype), remat=cfg.model.remat)
    sft_state, losses = train_sft(state.trainable, trainer.frozen, trainer.tokenizer, demos, settings, steps=ws.steps,
                                  batch_size=ws.batch_size, learning_rate=ws.learning_rate, seed=cfg.seed,
                                  max_target_tokens=cfg.sampling.max_new_tokens)
    print(f"[rft-jax] warm start: {len(demos)} demonstrations, SFT loss {losses[0]:.3f} -> {losses[-1]:.3f} "
          f"in {time.perf_counter() - t0:.0f} s")
    fresh = TrainState(sft_state.trainable, trainer.optimizer.init(sft_state.trainable), state.step)
    return place(fresh, trainer.shardings.state)


def measure_before_rl(trainer: Trainer, state: TrainState, splits, scorers: dict, run_dir: Path, writer, meta: dict,
                      results: dict) -> TrainState:
    """Base evaluations, the optional warm start and the signal check; returns the state RL starts from."""
    cfg = trainer.cfg
    print(f"[rft-jax] measuring the base model on {len(splits.val)} validation and {len(splits.test)} test prompts")
    base_val = run_eval("base_val", trainer, state, splits.val, scorers, run_dir, 0)
    meta["best_val"] = base_val.metrics["reward/mean"]
    if splits.test:
        results["base"] = run_eval("base", trainer, state, splits.test, scorers, run_dir, 0).metrics
    if cfg.warm_start.steps > 0:
        state = warm_start(trainer, state, splits.train)
        if splits.test:
            results["warm_start"] = run_eval("warm_start", trainer, state, splits.test, scorers, run_dir, 0).metrics
    signal = check_signal(trainer, state, splits.val or splits.train, jax.random.key(cfg.seed + 11))
    writer.write(0, {"val/reward/mean": base_val.metrics["reward/mean"], "val/pass@1": base_val.metrics["pass@1"],
                     **signal})
    print("[rft-jax] RL starts from: " + ", ".join(f"{k.split('/')[-1]}={v:.3f}" for k, v in signal.items()))
    if cfg.require_signal and signal["baseline/any_positive_share"] == 0:
        raise setup.ConfigError(
            "the model never earned a positive reward on sampled validation groups, so GRPO has no "
            "signal. Raise the temperature, shape the reward (partial credit), add a warm start "
            "(--warm-start.steps N), or pass --no-require-signal to go on anyway.")
    return state
