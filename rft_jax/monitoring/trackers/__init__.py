"""Experiment trackers (Weights & Biases, MLflow) that a run's metrics also go to, beside metrics.jsonl and
TensorBoard, so the runs of a sweep land in the tool researchers already compare runs in.

Each tracker is one small module (wandb_writer.py, mlflow_writer.py) imported only when the config asks for
it, so without its extra installed nothing imports wandb or mlflow. `MetricsWriter` opens them on process 0
and fans out to them: the run config at the start, each step's metrics with their step, and at the end
results.json and curves.png as artifacts with the results' numbers as a summary. A run that dies is marked
failed; what it logged stays. Each tracker's run id is kept in RUN/trackers.json, so `--resume` continues
the same tracker run.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

IDS_FILE = "trackers.json"
ARTIFACTS = ("results.json", "curves.png")  # what a finished run uploads, from its run dir


@dataclasses.dataclass(frozen=True)
class TrackingConfig:
    """Experiment trackers beside metrics.jsonl and TensorBoard (docs/monitoring.md); each needs its extra:
    pip install 'rft_jax[wandb]' or 'rft_jax[mlflow]'."""

    trackers: tuple[Literal["wandb", "mlflow"], ...] = ()
    """Trackers to log to, e.g. `--tracking.trackers wandb mlflow` (none by default)."""
    project: str = "rft-jax"
    """The wandb project and the MLflow experiment the run goes in."""
    run_name: str = ""
    """The tracker run's name; empty: the run dir's name (a sweep's arm)."""
    tags: tuple[str, ...] = ()
    """Tags on the tracker run (wandb tags; MLflow tags with an empty value)."""
    wandb_mode: Literal["online", "offline"] | None = None
    """offline: no login or network; the run is written under RUN/wandb/ (or $WANDB_DIR) for `wandb sync`.
    None: $WANDB_MODE, else online."""
    mlflow_uri: str = ""
    """MLflow tracking URI; empty: $MLFLOW_TRACKING_URI, else a SQLite store RUN/mlflow.db with its artifacts in
    RUN/mlartifacts (MLflow 3 refuses its plain-file store by default)."""

    def __post_init__(self):
        if len(set(self.trackers)) != len(self.trackers) or not set(self.trackers) <= set(EXTRAS):
            raise ValueError(f"tracking.trackers={self.trackers!r}: name each of {sorted(EXTRAS)} at most once")


class Tracker(Protocol):
    """One open tracker run."""

    run_id: str

    def log(self, step: int, scalars: Mapping[str, float]) -> None: ...

    def finish(self, artifacts: Sequence[Path], summary: Mapping[str, float], failed: bool) -> None: ...


@dataclasses.dataclass(frozen=True)
class Extra:
    """Where a tracker's code is, what it imports and how to install that."""

    module: str
    package: str
    pip: str


EXTRAS = {
    "wandb": Extra("rft_jax.monitoring.trackers.wandb_writer", "wandb", "pip install 'rft_jax[wandb]'"),
    "mlflow": Extra("rft_jax.monitoring.trackers.mlflow_writer", "mlflow",
                    "pip install 'rft_jax[mlflow]' (mlflow-skinny with SQLAlchemy and alembic for its SQLite store)"),
}


def missing_extra(name: str) -> str | None:
    """Why tracker `name` cannot run here (its package does not import), with the install command; None if it can."""
    extra = EXTRAS[name]
    try:
        importlib.import_module(extra.module)
    except ImportError as err:
        return (f"tracking.trackers asks for {name}, but {extra.package} cannot be imported ({err}). Install it "
                f"with `{extra.pip}`, or leave {name} out of --tracking.trackers")
    return None


def read_ids(run_dir: Path) -> dict[str, str]:
    path = run_dir / IDS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def open_trackers(cfg: TrackingConfig, run_dir: Path, run_config: Mapping[str, Any], resume: bool) -> list[Tracker]:
    """Opens (or, resuming, reopens) a run in each tracker of `cfg` and records their ids in RUN/trackers.json."""
    ids = read_ids(run_dir) if resume else {}
    opened: list[Tracker] = []
    name = cfg.run_name or run_dir.absolute().name
    try:
        for tracker in cfg.trackers:
            module = importlib.import_module(EXTRAS[tracker].module)
            opened.append(module.open_run(cfg, name, run_dir, run_config, ids.get(tracker)))
            ids[tracker] = opened[-1].run_id
    except BaseException:
        for t in opened:  # a half-opened set is not left running in the trackers
            t.finish([], {}, failed=True)
        raise
    (run_dir / IDS_FILE).write_text(json.dumps(ids, indent=1))
    return opened


def flat_numbers(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a nested dict (results.json), keyed by their path joined with "/"."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_numbers(value, path + "/"))
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[path] = float(value)
    return out


def run_outputs(run_dir: Path, since: float) -> tuple[list[Path], dict[str, float]]:
    """(artifacts, summary) of the attempt that started at `since` (unix time): its results.json and curves.png,
    and results.json's numbers under `results/`. Files from an earlier attempt of a resumed run are left out."""
    files = [run_dir / name for name in ARTIFACTS if (run_dir / name).exists()]
    files = [f for f in files if f.stat().st_mtime >= since]
    results = run_dir / ARTIFACTS[0]
    summary = flat_numbers(json.loads(results.read_text()), "results/") if results in files else {}
    return files, summary
