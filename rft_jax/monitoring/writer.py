"""MetricsWriter: the one object the trainer hands each step's metrics and rollouts to.

Per step it checks the alarms, then writes the metrics to `metrics.jsonl` (the
record the report reads), to TensorBoard, to the console and to the experiment trackers the
config names (wandb, MLflow: trackers/). Every file is flushed before `write` returns, so a crash loses
nothing already logged. On
multi-host runs only the primary process (`jax.process_index() == 0`) writes;
the others get a writer whose methods do nothing, so the trainer needs no `if`.

Layout of a run directory:
  metrics.jsonl            one JSON object a step: {"step", "time", <metric>: value, ...}
  alarms.jsonl             one JSON object per alarm, the first time it fires
  rollouts/step_<n>.jsonl  the completions of step n, one record a line
  tensorboard/             TensorBoard event files
  trackers.json            the tracker runs' ids, which --resume continues
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rft_jax.monitoring.alarm_monitor import AlarmMonitor
from rft_jax.monitoring.alarms import AlarmConfig
from rft_jax.monitoring.console import ConsoleView
from rft_jax.monitoring.jsonl import append_jsonl, drop_after_step, read_jsonl
from rft_jax.monitoring.trackers import Tracker, TrackingConfig, open_trackers, run_outputs

METRICS_FILE = "metrics.jsonl"
ALARMS_FILE = "alarms.jsonl"
ROLLOUTS_DIR = "rollouts"
TENSORBOARD_DIR = "tensorboard"


def rollouts_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / ROLLOUTS_DIR / f"step_{step}.jsonl"


def _records(path: Path) -> list[dict]:
    return list(read_jsonl(path)) if path.exists() else []


def to_scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Python floats from numbers, numpy and 0-d JAX arrays; anything else is a trainer bug."""
    scalars = {}
    for name, value in metrics.items():
        try:
            scalars[str(name)] = float(value)
        except (TypeError, ValueError) as err:
            raise TypeError(f"metric {name!r} is not a scalar: {value!r}") from err
    return scalars


class MetricsWriter:
    """Writes metrics, rollouts and alarms of one run (see the module docstring for the files)."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        is_primary: bool = True,
        total_steps: int | None = None,
        alarm_config: AlarmConfig | None = AlarmConfig(),
        console: bool = True,
        tensorboard: bool = True,
        keep_through: int | None = None,
        tracking: TrackingConfig = TrackingConfig(),
        run_config: Mapping[str, Any] | None = None,
    ):
        """`alarm_config=None` turns the alarms off; `console`/`tensorboard=False` suit tests and notebooks.
        `keep_through`: a resumed run's last step kept (its checkpoint's; -1 when it starts again from the top):
        later records are dropped, TensorBoard hides their events, and the alarms replay the records kept.
        `tracking`: the trackers to open (none by default), which get `run_config` (config.json's tree) first;
        with `keep_through` set they continue the runs RUN/trackers.json names."""
        self.run_dir = Path(run_dir)
        self.is_primary = is_primary
        self._alarms = AlarmMonitor(alarm_config) if alarm_config is not None and is_primary else None
        self._console = ConsoleView(total_steps) if console and is_primary else None
        self._tb = None
        self._trackers: list[Tracker] = []
        self._warned: set[tuple[type, str]] = set()
        self._opened = time.time()
        if not is_primary:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if keep_through is not None:
            self._resume(keep_through)
        if tracking.trackers:  # first: a tracker that cannot start leaves nothing open
            self._trackers = open_trackers(tracking, self.run_dir, run_config or {}, keep_through is not None)
        if tensorboard:
            from tensorboardX import SummaryWriter  # imported here: non-primary hosts never need it

            # Event files are append-only: TensorBoard hides the redone steps' old events from `purge_step` on.
            purge = None if keep_through is None else keep_through + 1
            self._tb = SummaryWriter(logdir=str(self.run_dir / TENSORBOARD_DIR), purge_step=purge)

    def _resume(self, keep_through: int) -> None:
        """Drops every record of the steps after `keep_through` and replays the rest into the alarms."""
        for name in (METRICS_FILE, ALARMS_FILE):
            drop_after_step(self.run_dir / name, keep_through)
        for path in (self.run_dir / ROLLOUTS_DIR).glob("step_*.jsonl"):
            step = path.stem.removeprefix("step_")
            if step.isdigit() and int(step) > keep_through:
                path.unlink()
        if self._alarms is not None:
            self._alarms.replay(_records(self.run_dir / METRICS_FILE), _records(self.run_dir / ALARMS_FILE))

    def check_alarms(self, step: int, metrics: Mapping[str, Any]) -> dict[str, float]:
        """Feed one step's metrics to the alarms; returns the `alarm/<name>` flags. Alarms that fire for the
        first time are printed above the progress bar and recorded in alarms.jsonl."""
        if not self.is_primary or self._alarms is None:
            return {}
        flags, events = self._alarms.update(step, to_scalars(metrics))
        if events:
            append_jsonl(self.run_dir / ALARMS_FILE, (asdict(e) for e in events))
        for event in events:
            if self._console is not None:
                self._console.print(event.format())
        return flags

    def write(self, step: int, metrics: Mapping[str, Any], *, alarms: bool = True) -> dict[str, float]:
        """Log one step's scalar metrics; returns them with the `alarm/<name>` flags added (`alarms=False`:
        the caller ran `check_alarms` itself)."""
        scalars = to_scalars(metrics)
        if not self.is_primary:
            return scalars
        if alarms:
            scalars.update(self.check_alarms(step, scalars))
        append_jsonl(self.run_dir / METRICS_FILE, [{"step": int(step), "time": time.time(), **scalars}])
        if self._tb is not None:
            for name, value in scalars.items():
                self._tb.add_scalar(name, value, global_step=int(step))
            self._tb.flush()
        if self._console is not None:
            self._console.update(step, scalars)
        self._to_trackers("log step", lambda t: t.log(int(step), scalars))
        return scalars

    def _to_trackers(self, what: str, call) -> None:
        """`call` on each tracker. A tracker that fails (its server down) is reported, once per tracker and
        action, and the run goes on: metrics.jsonl holds every step, and losing a long run to a tracker's hiccup
        costs more."""
        for tracker in self._trackers:
            try:
                call(tracker)
            except Exception as err:  # noqa: BLE001 (any tracker's error type)
                if (type(tracker), what) in self._warned:
                    continue
                self._warned.add((type(tracker), what))
                message = (f"[rft-jax] {type(tracker).__name__}: {what} failed ({type(err).__name__}: {err}); "
                           "metrics.jsonl has it (further such errors are not printed)")
                if self._console is not None:
                    self._console.print(message)
                else:
                    print(message)

    def write_rollouts(self, step: int, records: Iterable[Mapping[str, Any]]) -> Path | None:
        """Save a step's completions (e.g. {"prompt", "completion", "reward", "components"}) for later reading."""
        if not self.is_primary:
            return None
        path = rollouts_path(self.run_dir, step)
        append_jsonl(path, records, overwrite=True)  # a resumed run redoing step n replaces it
        return path

    def close(self, failed: bool = False) -> None:
        """Ends the trackers' runs (a finished one uploads results.json and curves.png if this attempt wrote
        them; `failed` marks one that died), then TensorBoard and the console. Closing twice does nothing."""
        artifacts, summary = run_outputs(self.run_dir, self._opened) if self._trackers and not failed else ([], {})
        self._to_trackers("finish", lambda t: t.finish(artifacts, summary, failed))
        self._trackers = []
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._console is not None:
            self._console.close()
            self._console = None

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        self.close(failed=exc_type is not None)
