"""The GRPO run: build the state, measure the base model, then for each step rollout -> update -> hooks.

Read top to bottom, `run` is the whole story. A step is `Trainer.step`
(trainer.py); everything between steps (validation, early stopping, the time
budget, alarms, logs, checkpoints) is a hook (hooks.py) with its interval.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import jax

from rft_jax.checkpoint.store import RunCheckpoints
from rft_jax.monitoring import MetricsWriter, plot_training_curves
from rft_jax.parallel import initialize_distributed, is_primary, make_mesh, to_host
from rft_jax.rollout.engine import prompt_ids
from rft_jax.train import setup
from rft_jax.train.before_rl import measure_before_rl
from rft_jax.train.config import TrainConfig
from rft_jax.train.evals import eval_scorers, run_eval, validation_hook
from rft_jax.train.hooks import Hook, StepContext, StopRequested, early_stopping_hook, run_hooks, time_budget_hook
from rft_jax.train.trainer import Trainer, batch_indices, build_trainer


def run(cfg: TrainConfig) -> dict:
    """Trains; returns the before/after evaluation metrics."""
    t_start = time.perf_counter()
    initialize_distributed(**dataclasses.asdict(cfg.distributed))  # before anything touches a device
    mesh = make_mesh(cfg.mesh)
    cfg = setup.resolve_init_from(cfg)
    run_dir = Path(cfg.out_dir)
    inputs = setup.prepare(cfg, run_dir)
    trainer, state = build_trainer(cfg, inputs.model_cfg, inputs.params, inputs.tokenizer, inputs.scorer, mesh,
                                   inputs.steps)
    ckpt = RunCheckpoints(run_dir, cfg.checkpoint.keep_latest, cfg.checkpoint.keep_best)
    state, meta = resume(cfg, ckpt, state, run_dir)
    scorers = eval_scorers(cfg, inputs.scorer)
    writer = MetricsWriter(run_dir, total_steps=inputs.steps, is_primary=is_primary())
    results: dict = {}
    try:
        if int(state.step) == 0:
            state = measure_before_rl(trainer, state, inputs.splits, scorers, run_dir, writer, meta, results)
        with StopRequested() as stop:
            hooks = [stop.hook(), time_budget_hook(cfg.time_budget_s, t_start),
                     validation_hook(trainer, inputs.splits.val, scorers, run_dir, meta, ckpt),
                     early_stopping_hook(meta, cfg.evaluation.patience, cfg.evaluation.interval),
                     *logging_hooks(cfg, writer), checkpoint_hook(cfg, ckpt, meta)]
            state, stopped = train(trainer, state, inputs.splits.train, inputs.steps, hooks)
        if stopped == "signal":
            print(f"[rft-jax] stopped at step {int(state.step)}; continue with --resume")
            return results
        return finish(trainer, state, inputs, scorers, run_dir, results, t_start)
    finally:
        writer.close()
        ckpt.close()


def train(trainer: Trainer, state, examples, steps: int, hooks: list[Hook]):
    """RL steps from the state's step to `steps`; returns the state and why it stopped early (or None)."""
    cfg = trainer.cfg
    ids = prompt_ids(trainer.tokenizer, examples)
    key = jax.random.key(cfg.seed)
    for step in range(int(state.step), steps):
        idx = batch_indices(step, cfg.batch_size, len(examples), cfg.seed)
        state, metrics, rollouts = trainer.step(state, [examples[i] for i in idx], jax.random.fold_in(key, step),
                                                [ids[i] for i in idx])
        ctx = StepContext(step + 1, steps, state, metrics, rollouts)
        run_hooks(hooks, ctx)
        if ctx.stop:
            if ctx.stop != "signal":
                print(f"[rft-jax] stopping at step {ctx.step}: {ctx.stop}")
            return state, ctx.stop
    return state, None


def resume(cfg: TrainConfig, ckpt: RunCheckpoints, state, run_dir: Path):
    """The latest checkpoint's state and run metadata with --resume, else the fresh state."""
    meta = {"best_val": None, "bad_evals": 0}
    if cfg.resume and ckpt.latest_step() is not None:
        state, meta = ckpt.restore(ckpt.latest, ckpt.latest_step(), state)
        print(f"[rft-jax] resumed from step {int(state.step)} in {run_dir}")
    return state, meta


def logging_hooks(cfg: TrainConfig, writer: MetricsWriter) -> list[Hook]:
    """Alarms (their flags join the metrics), the metrics record, and a sample of completions."""
    def alarms(ctx: StepContext) -> None:
        ctx.metrics.update(writer.check_alarms(ctx.step, ctx.metrics))

    def log_rollouts(ctx: StepContext) -> None:
        writer.write_rollouts(ctx.step, [{"prompt": group[0].example.prompt_messages[-1]["content"],
                                          "completion": group[0].text, "reward": group[0].reward,
                                          "components": group[0].components}
                                         for group in ctx.rollouts.groups[:4]])

    return [Hook("alarms", alarms), Hook("metrics", lambda ctx: writer.write(ctx.step, ctx.metrics, alarms=False)),
            Hook("rollout_log", log_rollouts, every=cfg.rollout_log_interval)]


def checkpoint_hook(cfg: TrainConfig, ckpt: RunCheckpoints, meta: dict) -> Hook:
    return Hook("checkpoint", lambda ctx: ckpt.save_latest(ctx.step, ctx.state, meta), every=cfg.checkpoint.interval,
                at_last=True, at_stop=True)


def finish(trainer: Trainer, state, inputs: setup.Prepared, scorers: dict, run_dir: Path, results: dict,
           t_start: float) -> dict:
    """The final test evaluation, the curves, the export and results.json."""
    cfg = trainer.cfg
    if inputs.splits.test:
        results["final"] = run_eval("final", trainer, state, inputs.splits.test, scorers, run_dir,
                                    int(state.step)).metrics
    trainable = to_host(state.trainable) if cfg.export else None  # a collective: every process takes part
    if is_primary():
        plot_training_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
        if cfg.export:
            from rft_jax.checkpoint.export import export_run  # noqa: PLC0415

            export_run(cfg, inputs.model_cfg, inputs.params, trainable, inputs.tokenizer, run_dir / "export")
    results["wall_seconds"] = time.perf_counter() - t_start
    if is_primary():
        (run_dir / "results.json").write_text(json.dumps(results, indent=1))
    return results
