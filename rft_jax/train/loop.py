"""The GRPO run: build the state, measure the base model, then for each step rollout -> update -> hooks.

Read top to bottom, `run` is the whole story. A step is `Trainer.step`
(trainer.py); everything between steps (validation, early stopping, the time
budget, alarms, logs, checkpoints) is a hook (hooks.py) with its interval.
With --resume, a run picks up its checkpoint's state, its records (each step
logged once), its clock (the time budget counts earlier attempts) and its base
evaluation (the before/after table), so it ends as an uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import jax
from jax.sharding import Mesh

from rft_jax.checkpoint.store import RunCheckpoints
from rft_jax.data.example import message_text
from rft_jax.monitoring import MetricsWriter, plot_training_curves
from rft_jax.parallel import initialize_distributed, is_primary, make_mesh, split_mesh, to_host
from rft_jax.rewards.pool import PooledScorer
from rft_jax.rollout.engine import prompt_ids
from rft_jax.train import preflight, setup
from rft_jax.train.async_loop import reward_pool, train_async
from rft_jax.train.before_rl import measure_before_rl, measured_before_rl, rebase
from rft_jax.train.config import TrainConfig
from rft_jax.train.evals import eval_scorers, run_eval, validation_hook
from rft_jax.train.hooks import Hook, StepContext, StopRequested, early_stopping_hook, run_hooks, time_budget_hook
from rft_jax.train.kl_monitor import kl_monitor_hook
from rft_jax.train.trainer import Trainer, batch_indices, build_trainer, extra_indices


def run(cfg: TrainConfig) -> dict:
    """Trains; returns the before/after evaluation metrics."""
    t_start = time.perf_counter()
    initialize_distributed(**dataclasses.asdict(cfg.distributed))  # before anything touches a device
    # The model's files and family, the kernel, a writable out_dir with room: before any compute.
    preflight.check_run(cfg, writes=is_primary())
    if jax.process_count() > 1:
        refuse_single_process_features(cfg)
        print(f"[rft-jax] process {jax.process_index()} of {jax.process_count()}: {jax.local_device_count()} of "
              f"{jax.device_count()} devices; process 0 writes {cfg.out_dir}")
    rollout_mesh, mesh = meshes(cfg)
    cfg = setup.resolve_init_from(cfg)
    run_dir = Path(cfg.out_dir)
    inputs = setup.prepare(cfg, run_dir)
    pool = reward_pool(cfg.reward_workers, inputs.scorer)  # every run scores through it (rewards/process_pool.py)
    try:
        return run_prepared(cfg, inputs, pool, rollout_mesh, mesh, run_dir, t_start)
    finally:
        if pool is not None:
            pool.close()


def run_prepared(cfg: TrainConfig, inputs: setup.Prepared, pool, rollout_mesh: Mesh | None, mesh: Mesh,
                 run_dir: Path, t_start: float) -> dict:
    """`run` after the inputs are checked. An asynchronous run's scorers (reward and views) go through its
    reward pool, so evaluation gets the same time limits as training."""
    inputs = inputs._replace(scorer=PooledScorer(inputs.scorer, pool)) if pool else inputs
    trainer, state = build_trainer(cfg, inputs.model_cfg, inputs.params, inputs.tokenizer, inputs.scorer, mesh,
                                   inputs.steps)
    ckpt = RunCheckpoints(run_dir, cfg.checkpoint.keep_latest, cfg.checkpoint.keep_best)
    state, meta, start = resume(cfg, ckpt, state, run_dir, trainer.updates_per_step)
    started = t_start - meta.get("elapsed_s", 0.0)  # the run's clock counts its earlier attempts
    scorers = eval_scorers(cfg, inputs.scorer)
    if pool is not None:
        scorers = {name: s if isinstance(s, PooledScorer) else PooledScorer(s, pool) for name, s in scorers.items()}
    # A resumed run redoes the steps after its checkpoint; without one, it starts again from the base evaluation.
    writer = MetricsWriter(run_dir, total_steps=inputs.steps, is_primary=is_primary(),
                           keep_through=(start or -1) if cfg.resume else None, tracking=cfg.tracking,
                           run_config=setup.config_json(cfg))
    results: dict = {}
    try:
        if start == 0:
            trainer, state = measure_before_rl(trainer, state, inputs.splits, scorers, run_dir, writer, meta,
                                               results)
        else:  # the first attempt measured the base: its table rows are read back
            results.update(measured_before_rl(run_dir))
            if cfg.warm_start.steps > 0:  # the warm-started policy is again the base (LoRA) and the reference
                trainer, _ = rebase(trainer, state, setup.warm_start_params(run_dir))
        with StopRequested() as stop:
            hooks = [stop.hook(), time_budget_hook(cfg.time_budget_s, started),
                     validation_hook(trainer, inputs.splits.val, scorers, run_dir, meta, ckpt),
                     early_stopping_hook(meta, cfg.evaluation.patience, cfg.evaluation.interval),
                     *([kl_monitor_hook(trainer, cfg.kl_monitor_interval)] if cfg.kl_monitor_interval else []),
                     *logging_hooks(cfg, writer), checkpoint_hook(cfg, ckpt, meta, started)]
            if cfg.asynchronous.enabled:
                state, stopped = train_async(trainer, state, inputs.splits.train, inputs.steps, hooks, start,
                                             rollout_mesh)
            else:
                state, stopped = train(trainer, state, inputs.splits.train, inputs.steps, hooks, start)
        if stopped == "signal":
            print(f"[rft-jax] stopped at step {trainer.rl_step(state)}; continue with --resume")
            return results
        early = bool(stopped and cfg.evaluation.patience and meta["bad_evals"] >= cfg.evaluation.patience)
        state = best_after_early_stop(trainer, state, ckpt) if early else state
        return finish(trainer, state, inputs, scorers, run_dir, results, started)
    except BaseException:
        writer.close(failed=True)  # the trackers mark the run failed; what it logged stays
        raise
    finally:
        writer.close()
        ckpt.close()


def refuse_single_process_features(cfg: TrainConfig) -> None:
    """Features that run in one process for now, refused before any compute rather than at their first use."""
    if cfg.asynchronous.enabled:
        raise setup.ConfigError("asynchronous RL runs in one process for now (its producer thread and reward pool "
                                "live on the host that samples): start the run without jax.distributed")
    if cfg.agent.enabled:
        raise setup.ConfigError("multi-turn rollouts run in one process for now (their environments run on the "
                                "host that samples): start the run without jax.distributed")


def meshes(cfg: TrainConfig) -> tuple[Mesh | None, Mesh]:
    """(rollout sub-mesh or None, training mesh): asynchronous runs may sample on devices of their own."""
    a = cfg.asynchronous
    if a.enabled and a.rollout_devices:
        return split_mesh(cfg.mesh, a.rollout_mesh, a.rollout_devices)
    return None, make_mesh(cfg.mesh)


def train(trainer: Trainer, state, examples, steps: int, hooks: list[Hook], start: int = 0):
    """RL steps `start` .. `steps` - 1; returns the state and why it stopped early (or None).

    The step (not the optimizer's update count, which is ppo_epochs x ppo_minibatches
    per step) picks the examples and the key, so a resumed run sees the same data.
    """
    cfg = trainer.cfg
    ids = prompt_ids(trainer.tokenizer, examples, trainer.rollout_settings.reasoning)
    key = jax.random.key(cfg.seed)
    for step in range(start, steps):
        idx = batch_indices(step, cfg.batch_size, len(examples), cfg.seed)

        def more(round_: int, step=step) -> tuple[list, list]:  # dynamic sampling's further prompts
            extra = extra_indices(step, round_, cfg.batch_size, len(examples), cfg.seed)
            return [examples[i] for i in extra], [ids[i] for i in extra]

        state, metrics, rollouts = trainer.step(state, [examples[i] for i in idx], jax.random.fold_in(key, step),
                                                [ids[i] for i in idx], more)
        ctx = StepContext(step + 1, steps, state, metrics, rollouts)
        run_hooks(hooks, ctx)
        if ctx.stop:
            if ctx.stop != "signal":
                print(f"[rft-jax] stopping at step {ctx.step}: {ctx.stop}")
            return state, ctx.stop
    return state, None


def resume(cfg: TrainConfig, ckpt: RunCheckpoints, state, run_dir: Path, updates_per_step: int = 1):
    """(state, run metadata, RL steps done): the latest checkpoint's with --resume, else the fresh state's.

    A checkpoint is saved under its RL step; its state's step counts optimizer updates
    (`updates_per_step` = ppo_epochs x ppo_minibatches of them per RL step).
    """
    meta = {"best_val": None, "bad_evals": 0}
    step = ckpt.latest_step() if cfg.resume else None
    if cfg.resume:  # best checkpoints after the one resumed from belong to an attempt whose steps are redone
        ckpt.forget_best_after(step or 0)
    if step is None:
        if cfg.resume:
            print(f"[rft-jax] no checkpoint in {run_dir} yet: the run starts again from the top")
        return state, meta, 0
    state, meta = ckpt.restore(ckpt.latest, step, state)
    if int(state.step) != step * updates_per_step:
        raise setup.ConfigError(
            f"the checkpoint of step {step} in {run_dir} holds {int(state.step)} optimizer updates, not "
            f"{step} x {updates_per_step} (ppo_epochs x ppo_minibatches): resume with the settings the run "
            "started with")
    print(f"[rft-jax] resumed from step {step} in {run_dir}")
    return state, meta, step


def best_after_early_stop(trainer: Trainer, state, ckpt: RunCheckpoints):
    """After early stopping, the best validation checkpoint's state (the one the final evaluation and the
    export should show), or the last state when no validation beat the starting policy."""
    last, best = trainer.rl_step(state), ckpt.best_step()
    if best is None:
        print(f"[rft-jax] early stopping: no validation beat the starting policy; the final evaluation and "
              f"export use the last step ({last})")
        return state
    state, _ = ckpt.restore(ckpt.best, best, state)
    print(f"[rft-jax] early stopping: the final evaluation and export use the best checkpoint, step {best} "
          f"(stopped at step {last})")
    return state


def logging_hooks(cfg: TrainConfig, writer: MetricsWriter) -> list[Hook]:
    """Alarms (their flags join the metrics), the metrics record, and a sample of completions."""
    def alarms(ctx: StepContext) -> None:
        ctx.metrics.update(writer.check_alarms(ctx.step, ctx.metrics))

    def log_rollouts(ctx: StepContext) -> None:
        writer.write_rollouts(ctx.step, [{"prompt": message_text(group[0].example.prompt_messages[-1]),
                                          "completion": group[0].text, "reward": group[0].reward,
                                          "components": group[0].components}
                                         for group in ctx.rollouts.groups[:4]])

    return [Hook("alarms", alarms), Hook("metrics", lambda ctx: writer.write(ctx.step, ctx.metrics, alarms=False)),
            Hook("rollout_log", log_rollouts, every=cfg.rollout_log_interval)]


def checkpoint_hook(cfg: TrainConfig, ckpt: RunCheckpoints, meta: dict, started: float) -> Hook:
    """The latest checkpoint, whose metadata carries the run's elapsed time (a resumed run's time budget goes on
    from there)."""
    def save(ctx: StepContext) -> None:
        meta["elapsed_s"] = time.perf_counter() - started
        ckpt.save_latest(ctx.step, ctx.state, meta)

    return Hook("checkpoint", save, every=cfg.checkpoint.interval, at_last=True, at_stop=True)


def finish(trainer: Trainer, state, inputs: setup.Prepared, scorers: dict, run_dir: Path, results: dict,
           started: float) -> dict:
    """The final test evaluation, the curves, the export and results.json (its wall time counts every attempt
    of a resumed run: `started` is shifted back by the earlier ones)."""
    cfg = trainer.cfg
    results["final_step"] = trainer.rl_step(state)
    if inputs.splits.test:
        results["final"] = run_eval("final", trainer, state, inputs.splits.test, scorers, run_dir,
                                    trainer.rl_step(state)).metrics
    trainable = to_host(state.trainable) if cfg.export else None  # a collective: every process takes part
    if is_primary():
        plot_training_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
        if cfg.export:
            from rft_jax.checkpoint.export import export_run  # noqa: PLC0415

            base = setup.warm_start_params(run_dir) if cfg.warm_start.steps > 0 else inputs.params
            export_run(cfg, inputs.model_cfg, base, trainable, inputs.tokenizer, run_dir / "export",
                       base_origin=setup.base_origin(cfg, run_dir))
    results["wall_seconds"] = time.perf_counter() - started
    if is_primary():
        (run_dir / "results.json").write_text(json.dumps(results, indent=1))
    return results
