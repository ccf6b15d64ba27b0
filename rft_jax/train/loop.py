"""The GRPO run: baseline, rollouts, updates, validation, early stopping, checkpoints, export.

Read top to bottom, `run` is the whole story; each piece it calls is a small
function elsewhere in this package.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from rft_jax.evaluation.evaluate import evaluate
from rft_jax.grpo import make_schedule, zero_variance_groups
from rft_jax.model.precision import storage_dtype
from rft_jax.model.registry import resolve_compute_dtype
from rft_jax.monitoring import MetricsWriter, plot_training_curves
from rft_jax.parallel import (initialize_distributed, is_primary, jit_sharded_train_step, make_mesh, place,
                              step_shardings, to_host)
from rft_jax.parallel.rollout import sample_and_score_sharded
from rft_jax.train import setup
from rft_jax.train.config import TrainConfig
from rft_jax.train.rollout import prompt_ids, rollout_metrics, sample_and_score, short_completion_len, to_batch
from rft_jax.train.step import StepSettings, TrainState


class StopRequested:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint and leaves at the next step boundary."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C means now
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n[rft-jax] signal {signum}: saving a checkpoint after this step, then stopping", flush=True)

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def epoch_order(num: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num)


def batch_indices(step: int, batch_size: int, num: int, seed: int) -> np.ndarray:
    """The examples of a step: a pure function of the step, so resuming needs no data cursor."""
    per_epoch = num // batch_size
    epoch, pos = divmod(step, per_epoch)
    return epoch_order(num, seed, epoch)[pos * batch_size:(pos + 1) * batch_size]


class Policy:
    """The current policy's parameters in the form the sampler and evaluation want."""

    def __init__(self, cfg: TrainConfig, model_cfg, frozen_or_none, compute_dtype):
        self.cfg, self.model_cfg, self.dtype = cfg, model_cfg, compute_dtype
        # LoRA: the base never changes, so its copy in the storage dtype (bf16 on accelerators) is made once.
        self.base = None if frozen_or_none is None else jax.tree.map(lambda x: x.astype(storage_dtype(compute_dtype)),
                                                                      frozen_or_none)

    def sampler_args(self, state: TrainState) -> dict:
        if self.cfg.mode == "lora":
            return dict(params=self.base, lora=state.trainable, lora_scale=self.cfg.lora.scale)
        stored = storage_dtype(self.dtype)
        return dict(params=jax.tree.map(lambda x: x.astype(stored), state.trainable), lora=None, lora_scale=1.0)


def eval_scorers(cfg: TrainConfig, main_scorer) -> dict:
    """The main reward plus, for the arithmetic task, the strict/loose/format views of the README table."""
    scorers = {"reward": main_scorer}
    if cfg.data.task.name != "none":
        build = setup.build_scorer
        scorers["strict"] = build('{"name": "math_answer", "mode": "strict_line"}')
        scorers["loose"] = build('{"name": "math_answer", "mode": "last_number"}')
        scorers["format"] = build("answer_format")
    return scorers


def run_eval(name, policy, state, model_cfg, tokenizer, examples, scorers, cfg: TrainConfig, run_dir: Path,
             step: int | None):
    t0 = time.perf_counter()
    result = evaluate(key=jax.random.key(cfg.seed + 7), examples=examples, scorers=scorers, cfg=model_cfg,
                      tokenizer=tokenizer, max_new_tokens=cfg.sampling.max_new_tokens, dtype=policy.dtype,
                      **policy.sampler_args(state))
    result.metrics["eval_seconds"] = time.perf_counter() - t0
    doc = result.to_json(name, step=step, model=cfg.model.name)
    (run_dir / f"eval_{name}.json").write_text(json.dumps(doc, indent=1))
    return result


def check_signal(cfg: TrainConfig, policy, state, model_cfg, tokenizer, scorer, val, key) -> dict:
    """Sampled groups on validation prompts: can the model ever succeed, do groups disagree?"""
    examples = val[: min(len(val), 2 * cfg.batch_size)]
    r = sample_and_score(key=key, examples=examples, scorer=scorer, cfg=model_cfg, tokenizer=tokenizer,
                         sampling=cfg.sampling.params,
                         num_samples=cfg.sampling.samples_per_prompt, max_new_tokens=cfg.sampling.max_new_tokens,
                         dtype=policy.dtype, stops=cfg.sampling.stop, **policy.sampler_args(state))
    zero_std = np.asarray(zero_variance_groups(jnp.asarray(r.rewards_BxG)))
    return {"baseline/sampled_reward_mean": float(r.rewards_BxG.mean()),
            "baseline/any_positive_share": float((r.rewards_BxG.max(1) > 0).mean()),
            "baseline/success_share": float((r.rewards_BxG >= cfg.evaluation.success_threshold).mean()),
            "baseline/zero_std_frac": float(zero_std.mean()),
            "baseline/truncation_rate": float(r.truncated_BxG.mean())}


def warm_start(cfg: TrainConfig, policy, state, frozen, optimizer, model_cfg, tokenizer, train) -> TrainState:
    """Short SFT on demonstrations before RL; RL then starts from these weights with a fresh optimizer."""
    from rft_jax.sft.demos import self_format_demos  # noqa: PLC0415
    from rft_jax.sft.run import train_sft  # noqa: PLC0415
    from rft_jax.sft.step import SFTSettings  # noqa: PLC0415

    ws = cfg.warm_start
    t0 = time.perf_counter()
    demos = self_format_demos(key=jax.random.key(cfg.seed + 3), cfg=model_cfg, tokenizer=tokenizer,
                              examples=train[-ws.num_demos:], max_new_tokens=cfg.sampling.max_new_tokens,
                              dtype=policy.dtype, **policy.sampler_args(state))
    settings = SFTSettings(model_cfg, cfg.lora.scale if cfg.mode == "lora" else None, str(policy.dtype),
                           remat=cfg.model.remat)
    sft_state, losses = train_sft(state.trainable, frozen, tokenizer, demos, settings, steps=ws.steps,
                                  batch_size=ws.batch_size, learning_rate=ws.learning_rate, seed=cfg.seed,
                                  max_target_tokens=cfg.sampling.max_new_tokens)
    print(f"[rft-jax] warm start: {len(demos)} demonstrations, SFT loss {losses[0]:.3f} -> {losses[-1]:.3f} "
          f"in {time.perf_counter() - t0:.0f} s")
    return TrainState(sft_state.trainable, optimizer.init(sft_state.trainable), jnp.int32(0))


def initial_params(cfg: TrainConfig, model_cfg, params: dict) -> dict:
    """`init_from`: the checkpoint's policy as full params, which the run then treats as its base model.

    So the frozen base (LoRA) or the reference copy (full) is that policy: the KL
    reference is the initialised policy with no change to the step. LoRA-on-LoRA
    merges the earlier adapter and trains a fresh one rather than continuing it,
    because step.py's LoRA reference is the base with the adapter off (continuing
    would make the reference the pre-SFT model) and the two runs' ranks may differ.
    """
    from rft_jax.train.checkpoint import checkpoint_params, find_checkpoint  # noqa: PLC0415

    ref = find_checkpoint(cfg.init_from)
    params = checkpoint_params(ref, cfg.model.name, model_cfg, params)
    print(f"[rft-jax] policy and KL reference initialised from {ref.describe()}")
    return params


def run(cfg: TrainConfig) -> dict:
    """Trains; returns the before/after evaluation metrics."""
    t_start = time.perf_counter()
    initialize_distributed(**dataclasses.asdict(cfg.distributed))  # before anything touches a device
    mesh = make_mesh(cfg.mesh)
    run_dir = Path(cfg.out_dir)
    if cfg.init_from:  # record the exact checkpoint: this run's own checkpoints are relative to it
        from rft_jax.train.checkpoint import find_checkpoint  # noqa: PLC0415

        cfg = dataclasses.replace(cfg, init_from=str(find_checkpoint(cfg.init_from).path))
    if not cfg.resume and is_primary() and (moved := setup.set_aside_previous_run(run_dir)):
        print(f"[rft-jax] {run_dir} held an earlier run: moved to {moved} (pass --resume to continue a run)")
    setup.write_run_config(cfg, run_dir)
    scorer = setup.build_scorer(cfg.reward)
    model_cfg, params, tokenizer = setup.load_policy(cfg)
    if cfg.init_from:
        params = initial_params(cfg, model_cfg, params)
    setup.check_lengths(cfg, model_cfg)
    splits = setup.load_splits(cfg, run_dir, tokenizer, scorer.needs_reference)
    steps = setup.total_steps(cfg, len(splits.train))
    if steps < 1:
        raise setup.ConfigError(f"{len(splits.train)} training examples make 0 steps of batch_size={cfg.batch_size}")
    state, frozen, optimizer = setup.init_state(cfg, model_cfg, params, steps)
    # A copy: the donated train state must not share buffers with the reference.
    reference = jax.tree.map(jnp.copy, params) if (cfg.mode == "full" and cfg.loss.beta != 0) else None
    sh = step_shardings(mesh, optimizer, state, frozen, reference, cfg.batch_size, cfg.mode == "lora")
    state, frozen, reference = place((state, frozen, reference), (sh.state, sh.frozen, sh.reference))
    compute_dtype = resolve_compute_dtype(cfg.model.compute_dtype)
    dtype = jnp.dtype(compute_dtype)
    policy = Policy(cfg, model_cfg, frozen, dtype)
    settings = StepSettings(model_cfg, cfg.loss, cfg.lora.scale if cfg.mode == "lora" else None,
                            cfg.sampling.temperature, compute_dtype, cfg.optimizer.grad_accum_steps,
                            remat=cfg.model.remat, use_old_logp=cfg.ppo_epochs > 1)
    step_fn = jit_sharded_train_step(optimizer, settings, sh)
    schedule = make_schedule(cfg.optimizer, steps)
    from rft_jax.train.checkpoint import RunCheckpoints  # noqa: PLC0415 (orbax import is slow)

    ckpt = RunCheckpoints(run_dir, cfg.checkpoint.keep_latest, cfg.checkpoint.keep_best)
    meta = {"best_val": None, "bad_evals": 0}
    start_step = 0
    if cfg.resume and ckpt.latest_step() is not None:
        state, meta = ckpt.restore(ckpt.latest, ckpt.latest_step(), state)
        start_step = int(state.step)
        print(f"[rft-jax] resumed from step {start_step} in {run_dir}")
    scorers = eval_scorers(cfg, scorer)
    writer = MetricsWriter(run_dir, total_steps=steps, is_primary=is_primary())
    results: dict = {}
    try:
        if start_step == 0:
            print(f"[rft-jax] measuring the base model on {len(splits.val)} validation and {len(splits.test)} test prompts")
            base_val = run_eval("base_val", policy, state, model_cfg, tokenizer, splits.val, scorers, cfg, run_dir, 0)
            meta["best_val"] = base_val.metrics["reward/mean"]
            if splits.test:
                results["base"] = run_eval("base", policy, state, model_cfg, tokenizer, splits.test, scorers, cfg,
                                           run_dir, 0).metrics
            if cfg.warm_start.steps > 0:
                state = place(warm_start(cfg, policy, state, frozen, optimizer, model_cfg, tokenizer, splits.train),
                              sh.state)
                results["warm_start"] = run_eval("warm_start", policy, state, model_cfg, tokenizer, splits.test,
                                                 scorers, cfg, run_dir, 0).metrics
            signal_metrics = check_signal(cfg, policy, state, model_cfg, tokenizer, scorer, splits.val,
                                          jax.random.key(cfg.seed + 11))
            writer.write(0, {"val/reward/mean": base_val.metrics["reward/mean"], "val/pass@1": base_val.metrics["pass@1"],
                             **signal_metrics})
            print("[rft-jax] RL starts from: " + ", ".join(f"{k.split('/')[-1]}={v:.3f}" for k, v in signal_metrics.items()))
            if cfg.require_signal and signal_metrics["baseline/any_positive_share"] == 0:
                raise setup.ConfigError(
                    "the model never earned a positive reward on sampled validation groups, so GRPO has no "
                    "signal. Raise the temperature, shape the reward (partial credit), add a warm start "
                    "(--warm-start.steps N), or pass --no-require-signal to go on anyway.")
        sampling = cfg.sampling.params
        base_key = jax.random.key(cfg.seed)
        train_ids = prompt_ids(tokenizer, splits.train)
        with StopRequested() as stop:
            for step in range(start_step, steps):
                t0 = time.perf_counter()
                idx = batch_indices(step, cfg.batch_size, len(splits.train), cfg.seed)
                examples = [splits.train[i] for i in idx]
                r = sample_and_score_sharded(mesh, key=jax.random.fold_in(base_key, step), examples=examples,
                                             scorer=scorer, cfg=model_cfg, tokenizer=tokenizer, sampling=sampling,
                                             num_samples=cfg.sampling.samples_per_prompt,
                                             max_new_tokens=cfg.sampling.max_new_tokens, dtype=dtype,
                                             stops=cfg.sampling.stop, ids=[train_ids[i] for i in idx],
                                             **policy.sampler_args(state))
                batch, _ = to_batch(r, advantage_mode=cfg.loss.advantage, advantage_eps=cfg.loss.advantage_eps,
                                    max_new_tokens=cfg.sampling.max_new_tokens,
                                    overlong_buffer_len=cfg.loss.overlong_buffer_len,
                                    overlong_factor=cfg.loss.overlong_penalty_factor)
                short = short_completion_len(batch, cfg.optimizer.grad_accum_steps)
                batch = place(batch, sh.batch)
                t1 = time.perf_counter()
                lr = float(schedule(int(state.step)))
                for _ in range(cfg.ppo_epochs):
                    state, update_metrics = step_fn(state, frozen, reference, batch, short)
                update_metrics = {k: float(v) for k, v in update_metrics.items()}
                t2 = time.perf_counter()
                tokens = int(r.lengths_BxG.sum()) + int(r.prompt_mask_BxP.sum())
                metrics = {**rollout_metrics(r, np.asarray(batch.advantages_BxG)),
                           **update_metrics, "actor/lr": lr,
                           "timing_s/generate": r.timing["generate"], "timing_s/reward": r.timing["reward"],
                           "timing_s/update": t2 - t1, "timing_s/step": t2 - t0,
                           "perf/tokens_per_s": tokens / (t2 - t0)}
                done = step + 1
                if done % cfg.evaluation.interval == 0 or done == steps:
                    val = run_eval("val", policy, state, model_cfg, tokenizer, splits.val, scorers, cfg, run_dir, done)
                    metrics["val/reward/mean"], metrics["val/pass@1"] = val.metrics["reward/mean"], val.metrics["pass@1"]
                    improved = meta["best_val"] is None or val.metrics["reward/mean"] > meta["best_val"] + cfg.evaluation.min_delta
                    meta["bad_evals"] = 0 if improved else meta["bad_evals"] + 1
                    if improved:
                        meta["best_val"] = val.metrics["reward/mean"]
                        ckpt.save_best(done, state, meta, val.metrics["reward/mean"])
                writer.write(done, metrics)
                if done % cfg.rollout_log_interval == 0:
                    writer.write_rollouts(done, [{"prompt": ex.prompt_messages[-1]["content"], "completion": r.texts[i][0],
                                                  "reward": float(r.rewards_BxG[i, 0]),
                                                  "components": {k: float(v[i, 0]) for k, v in r.components.items()}}
                                                 for i, ex in enumerate(examples[:4])])
                out_of_time = cfg.time_budget_s and time.perf_counter() - t_start > cfg.time_budget_s
                early = cfg.evaluation.patience and meta["bad_evals"] >= cfg.evaluation.patience
                if done % cfg.checkpoint.interval == 0 or stop.requested or done == steps or out_of_time or early:
                    ckpt.save_latest(done, state, meta)
                if stop.requested:
                    print(f"[rft-jax] stopped at step {done}; continue with --resume")
                    return results
                if early or out_of_time:
                    print(f"[rft-jax] stopping at step {done}: " + ("validation stopped improving" if early else "time budget reached"))
                    break
        if splits.test:
            results["final"] = run_eval("final", policy, state, model_cfg, tokenizer, splits.test, scorers, cfg,
                                        run_dir, int(state.step)).metrics
        plot_training_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
        if cfg.export:
            from rft_jax.train.export import export_run  # noqa: PLC0415

            trainable = to_host(state.trainable)  # a collective: every process takes part
            if is_primary():
                export_run(cfg, model_cfg, params, trainable, tokenizer, run_dir / "export")
        results["wall_seconds"] = time.perf_counter() - t_start
        (run_dir / "results.json").write_text(json.dumps(results, indent=1))
        return results
    finally:
        writer.close()
        ckpt.close()
