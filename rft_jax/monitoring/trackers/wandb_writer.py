"""Weights & Biases: one wandb run per rft-jax run (imported only when `tracking.trackers` names wandb).

The run's id (wandb's own, RUN/trackers.json keeps it) is passed back with `resume="allow"`, so `--resume`
continues it (online; offline, wandb writes a second offline-run folder of the same id, which `wandb sync` adds to
the same run). Steps a resumed
run redoes were already logged by the first attempt: wandb keeps those values and drops the repeats, as it
drops any step below its last. The console is not captured, so wandb leaves the progress bar alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import wandb

from rft_jax.monitoring.trackers import TrackingConfig


class WandbTracker:
    def __init__(self, run):
        self._run = run
        self.run_id = run.id

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        self._run.log(dict(scalars), step=step)

    def finish(self, artifacts: Sequence[Path], summary: Mapping[str, float], failed: bool) -> None:
        """The results as the run's summary (what the runs table sorts by), its files as one artifact, then
        the end: exit code 1 marks a run that died."""
        if summary:
            self._run.summary.update(dict(summary))
        if artifacts:
            outputs = wandb.Artifact(f"run-{self.run_id}-outputs", type="run-outputs")
            for path in artifacts:  # immutable: referenced where it is, not copied to wandb's staging folder
                outputs.add_file(str(path), policy="immutable")
            self._run.log_artifact(outputs)
        self._run.finish(exit_code=1 if failed else 0)


def open_run(cfg: TrackingConfig, name: str, run_dir: Path, run_config: Mapping[str, Any],
             run_id: str | None) -> WandbTracker:
    """A new wandb run, or the one of id `run_id` continued; the run config (nested) as its config."""
    run = wandb.init(project=cfg.project, name=name, tags=list(cfg.tags), mode=cfg.wandb_mode,
                     id=run_id, resume="allow",
                     dir=os.environ.get("WANDB_DIR") or str(run_dir), settings=wandb.Settings(console="off"))
    # A resumed run's config differs at least in `resume`: the latest values are kept.
    run.config.update(dict(run_config), allow_val_change=True)
    return WandbTracker(run)
