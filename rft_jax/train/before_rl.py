"""What a run does before its first RL step: measure the base model, warm-start it, check for a signal."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from rft_jax.checkpoint.export import export_model
from rft_jax.checkpoint.store import WARM_START_MODEL
from rft_jax.data.validate import load_examples
from rft_jax.environments import make_environment
from rft_jax.grpo import TrainState
from rft_jax.model.lora import init_lora, merge_lora
from rft_jax.parallel import is_primary, place, to_host
from rft_jax.rollout.metrics import signal_metrics
from rft_jax.rollout.multiturn import episode_tools
from rft_jax.sft.demos import conversation_pairs, self_format_demos
from rft_jax.sft.run import train_sft
from rft_jax.sft.step import SFTSettings
from rft_jax.train import setup
from rft_jax.train.evals import run_eval
from rft_jax.train.trainer import Policy, Trainer


def signal_prompts(splits, batch_size: int) -> list:
    """Up to two batches of validation prompts to sample for the signal check; training prompts without
    validation data (the check asks whether the model can ever earn a reward, not how well it does)."""
    return (splits.val or splits.train)[: 2 * batch_size]


def check_signal(trainer: Trainer, state: TrainState, prompts, key: jax.Array) -> dict[str, float]:
    """Sampled groups on `prompts`, through the same rollout path as training."""
    r = trainer.rollouts(state, prompts, key)
    return signal_metrics(r, trainer.cfg.evaluation.success_threshold)


def rebase(trainer: Trainer, state: TrainState, policy_params: dict) -> tuple[Trainer, TrainState]:
    """The trainer and a fresh train state for starting RL from `policy_params` (float32, host), which
    become the KL reference, as `init_from`'s checkpoint does (`setup.initial_params`).

    LoRA: they are the new frozen base and a fresh adapter (B = 0) goes on top, so the
    policy is exactly `policy_params` and the reference (the base, adapter off) is too.
    Full: the trainable parameters and, with beta != 0, the reference copy.
    """
    cfg = trainer.cfg
    if cfg.mode == "lora":
        frozen = place(jax.tree.map(jnp.asarray, policy_params), trainer.shardings.frozen)
        trainer = dataclasses.replace(trainer, frozen=frozen, policy=Policy(cfg, frozen, trainer.policy.dtype))
        trainable = init_lora(trainer.model_cfg, cfg.lora, jax.random.key(cfg.seed + 1))
    else:
        reference = trainer.reference
        if reference is not None:
            reference = place(jax.tree.map(jnp.asarray, policy_params), trainer.shardings.reference)
        trainer = dataclasses.replace(trainer, reference=reference)
        trainable = jax.tree.map(jnp.asarray, policy_params)
    fresh = TrainState(trainable, trainer.optimizer.init(trainable), state.step)
    return trainer, place(fresh, trainer.shardings.state)


def demo_tools(cfg, example) -> list | None:
    """The tools a demonstration is learnt with: its own, else the run's environment's, so its context is the
    prompt a rollout shows (`rft_jax.rollout.multiturn.episode_tools`)."""
    if example.tools or not cfg.agent.enabled:
        return example.tools
    env = make_environment(cfg.agent.environment, example)
    try:
        return episode_tools(example, env)
    finally:
        env.close()


def warm_start(trainer: Trainer, state: TrainState, train, run_dir: Path) -> tuple[Trainer, TrainState]:
    """Short SFT on demonstrations before RL; RL then starts from these weights with a fresh optimizer.

    The warm-started policy is the KL reference (as an `init_from` checkpoint is) and is
    saved as RUN/warm_start/model, where --resume, the export and `rft-jax eval` find it.
    """
    cfg, ws = trainer.cfg, trainer.cfg.warm_start
    t0 = time.perf_counter()
    if ws.source == "conversations":
        demos = [pair for ex in load_examples(ws.demos_file, allow_duplicate_prompts=True).examples[:ws.num_demos]
                 for pair in conversation_pairs(trainer.tokenizer, ex, demo_tools(cfg, ex))]
    else:
        demos = self_format_demos(key=jax.random.key(cfg.seed + 3), cfg=trainer.model_cfg,
                                  tokenizer=trainer.tokenizer, examples=train[-ws.num_demos:],
                                  max_new_tokens=cfg.sampling.max_new_tokens, dtype=trainer.policy.dtype,
                                  reasoning=trainer.rollout_settings.reasoning, **trainer.policy.sampler_args(state))
    settings = SFTSettings(trainer.model_cfg, cfg.lora.scale if cfg.mode == "lora" else None,
                           str(trainer.policy.dtype), remat=cfg.model.remat,
                           logprob_impl=trainer.step_settings.logprob_impl, mesh=trainer.mesh)
    sft_state, losses = train_sft(state.trainable, trainer.frozen, trainer.tokenizer, demos, settings, steps=ws.steps,
                                  batch_size=ws.batch_size, learning_rate=ws.learning_rate, seed=cfg.seed,
                                  max_target_tokens=cfg.sampling.max_new_tokens)
    print(f"[rft-jax] warm start: {len(demos)} demonstrations, SFT loss {losses[0]:.3f} -> {losses[-1]:.3f} "
          f"in {time.perf_counter() - t0:.0f} s")
    if cfg.mode == "lora":
        policy = to_host(merge_lora(trainer.frozen, sft_state.trainable, cfg.lora.scale))
    else:
        policy = to_host(sft_state.trainable)
    if is_primary():
        export_model(run_dir / WARM_START_MODEL, trainer.model_cfg, policy, trainer.tokenizer)
    return rebase(trainer, state, policy)


def measure_before_rl(trainer: Trainer, state: TrainState, splits, scorers: dict, run_dir: Path, writer, meta: dict,
                      results: dict) -> tuple[Trainer, TrainState]:
    """Base evaluations, the optional warm start and the signal check; returns the trainer and state RL starts
    from (after a warm start, the trainer's base or reference is the warm-started policy)."""
    cfg = trainer.cfg
    print(f"[rft-jax] measuring the base model on {len(splits.val)} validation and {len(splits.test)} test prompts")
    base = {}
    if splits.val:
        base_val = run_eval("base_val", trainer, state, splits.val, scorers, run_dir, 0).metrics
        meta["best_val"] = base_val["reward/mean"]
        base = {"val/reward/mean": base_val["reward/mean"], "val/pass@1": base_val["pass@1"]}
    else:
        print("[rft-jax] no validation data: no validation evaluations or best checkpoint; the signal check "
              "samples training prompts")
    if splits.test:
        results["base"] = run_eval("base", trainer, state, splits.test, scorers, run_dir, 0).metrics
    if cfg.warm_start.steps > 0:
        trainer, state = warm_start(trainer, state, splits.train, run_dir)
        if splits.test:
            results["warm_start"] = run_eval("warm_start", trainer, state, splits.test, scorers, run_dir, 0).metrics
    signal = check_signal(trainer, state, signal_prompts(splits, cfg.batch_size), jax.random.key(cfg.seed + 11))
    writer.write(0, {**base, **signal})
    print("[rft-jax] RL starts from: " + ", ".join(f"{k.split('/')[-1]}={v:.3f}" for k, v in signal.items()))
    if cfg.require_signal and signal["baseline/any_positive_share"] == 0:
        raise setup.ConfigError(
            "the model never earned a positive reward on sampled groups before training, so GRPO has no "
            "signal. Raise the temperature, shape the reward (partial credit), add a warm start "
            "(--warm-start.steps N), or pass --no-require-signal to go on anyway.")
    return trainer, state


def measured_before_rl(run_dir: Path) -> dict:
    """The test evaluations before RL (`base`, `warm_start`) that a resumed run's first attempt saved, so its
    before/after table keeps them (the resumed run does not measure the base model again)."""
    results = {}
    for name in ("base", "warm_start"):
        path = run_dir / f"eval_{name}.json"
        if path.is_file():
            results[name] = json.loads(path.read_text())["metrics"]
    return results
