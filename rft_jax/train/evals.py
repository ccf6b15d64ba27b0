"""Evaluations inside a run: the base model, validation as a hook (with the best checkpoint), the final test."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax

from rft_jax.evaluation.evaluate import EvalResult, evaluate
from rft_jax.grpo import TrainState
from rft_jax.parallel import agree, is_primary
from rft_jax.train import setup
from rft_jax.train.config import TrainConfig
from rft_jax.train.hooks import Hook, StepContext
from rft_jax.train.trainer import Trainer


def eval_scorers(cfg: TrainConfig, main_scorer) -> dict:
    """The run's reward plus the experiment's evaluation views (`evaluation.views`), each a table row."""
    scorers = {"reward": main_scorer}
    for name, spec in cfg.evaluation.views:
        if name in scorers:
            raise setup.ConfigError(f"evaluation view {name!r}: the name is taken (the run's reward is 'reward')")
        scorers[name] = setup.build_scorer(spec)
    return scorers


def run_eval(name: str, trainer: Trainer, state: TrainState, examples, scorers: dict, run_dir: Path,
             step: int | None) -> EvalResult:
    """Greedy completions of `examples` by the current policy, scored by every scorer; saved as eval_<name>.json."""
    cfg = trainer.cfg
    t0 = time.perf_counter()
    result = evaluate(key=jax.random.key(cfg.seed + 7), examples=examples, scorers=scorers, cfg=trainer.model_cfg,
                      tokenizer=trainer.tokenizer, max_new_tokens=cfg.sampling.max_new_tokens,
                      dtype=trainer.policy.dtype, mesh=trainer.mesh, reasoning=trainer.rollout_settings.reasoning,
                      agent=trainer.rollout_settings.agent,
                      **trainer.policy.sampler_args(state))
    result.metrics["eval_seconds"] = time.perf_counter() - t0
    if is_primary():
        doc = result.to_json(name, step=step, model=cfg.model.name)
        (run_dir / f"eval_{name}.json").write_text(json.dumps(doc, indent=1))
    return result


def validation_hook(trainer: Trainer, val, scorers: dict, run_dir: Path, meta: dict, ckpt) -> Hook:
    """Validate; keep the best checkpoint; count validations without improvement for early stopping.

    Without validation data it never runs: there is nothing to measure, so no best checkpoint and no early stop.
    """
    ev = trainer.cfg.evaluation

    def validate(ctx: StepContext) -> None:
        val_metrics = run_eval("val", trainer, ctx.state, val, scorers, run_dir, ctx.step).metrics
        reward = val_metrics["reward/mean"]
        ctx.metrics["val/reward/mean"], ctx.metrics["val/pass@1"] = reward, val_metrics["pass@1"]
        # Saving the best checkpoint is a collective: process 0's decision holds for every process.
        improved = agree(meta["best_val"] is None or reward > meta["best_val"] + ev.min_delta)
        meta["bad_evals"] = 0 if improved else meta["bad_evals"] + 1
        if improved:
            meta["best_val"] = reward
            ckpt.save_best(ctx.step, ctx.state, meta, reward)

    if not val:
        return Hook("validation", validate, every=0)
    return Hook("validation", validate, every=ev.interval, at_last=True)
