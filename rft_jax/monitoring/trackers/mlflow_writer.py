"""MLflow: one MLflow run per rft-jax run (imported only when `tracking.trackers` names mlflow).

Through `MlflowClient` rather than mlflow's fluent API, so no process-wide "active run" is left behind and a
library caller's own MLflow runs are not touched. Every call writes through to the store, so a run that dies
keeps every step it logged. `--resume` reopens the run whose id RUN/trackers.json holds; the steps a resumed
run redoes are logged again (MLflow keeps both values of such a step).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from rft_jax.monitoring.trackers import TrackingConfig

DEFAULT_STORE = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
MAX_PARAMS = 100  # MLflow's limits for one log_batch call and for a param's value
MAX_METRICS = 1000
MAX_VALUE = 6000


def tracking_uri(cfg: TrackingConfig, run_dir: Path) -> str:
    return cfg.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or \
        f"sqlite:///{(run_dir / DEFAULT_STORE).absolute()}"


def metric_key(name: str) -> str:
    """An MLflow-valid metric name (alphanumerics, _ - . / space): `val/pass@1` -> `val/pass_at_1`."""
    return re.sub(r"[^\w./ -]", "_", name.replace("@", "_at_"))


def flat_params(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """The run config as MLflow params: nested fields joined with ".", lists as JSON, values cut to MLflow's
    limit."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flat_params(value, path + "."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out[path] = text[:MAX_VALUE]
    return out


def experiment_id(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found else client.create_experiment(name, artifact_location=artifact_location)


def _chunks(items: list, size: int):
    return (items[i:i + size] for i in range(0, len(items), size))


class MlflowTracker:
    def __init__(self, client: MlflowClient, run_id: str):
        self._client = client
        self.run_id = run_id
        self._step = 0

    def _metrics(self, step: int, scalars: Mapping[str, float]) -> None:
        ms = int(time.time() * 1000)
        metrics = [Metric(metric_key(k), float(v), ms, step) for k, v in scalars.items()]
        for chunk in _chunks(metrics, MAX_METRICS):
            self._client.log_batch(self.run_id, metrics=chunk)

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        self._metrics(step, scalars)
        self._step = max(self._step, step)

    def finish(self, artifacts: Sequence[Path], summary: Mapping[str, float], failed: bool) -> None:
        """The results as metrics at the last step, the files as artifacts, then the run's end status."""
        if summary:
            self._metrics(self._step, summary)
        for path in artifacts:
            self._client.log_artifact(self.run_id, str(path))
        self._client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


def reopen(client: MlflowClient, run_id: str) -> dict[str, str] | None:
    """The params of run `run_id`, set running again; None when the store does not hold it (a new one starts)."""
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    client.update_run(run_id, status="RUNNING")
    return dict(run.data.params)


def open_run(cfg: TrackingConfig, name: str, run_dir: Path, run_config: Mapping[str, Any],
             run_id: str | None) -> MlflowTracker:
    """A new MLflow run, or run `run_id` continued; the flattened run config as its params."""
    uri = tracking_uri(cfg, run_dir)
    client = MlflowClient(uri)
    logged = reopen(client, run_id) if run_id else None
    if logged is None:
        # The default store is the run's own: its artifacts go beside it, not to ./mlruns of the working dir.
        own = not cfg.mlflow_uri and not os.environ.get("MLFLOW_TRACKING_URI")
        location = (run_dir / DEFAULT_ARTIFACTS).absolute().as_uri() if own else None
        run_id = client.create_run(experiment_id(client, cfg.project, location), run_name=name,
                                   tags={tag: "" for tag in cfg.tags}).info.run_id
        logged = {}
    # A param cannot change once logged: a resumed run adds only new ones (its `resume` stays as first logged).
    params = [Param(k, v) for k, v in flat_params(run_config).items() if k not in logged]
    for chunk in _chunks(params, MAX_PARAMS):
        client.log_batch(run_id, params=chunk)
    return MlflowTracker(client, run_id)
