"""Runs every alarm on each step's metrics and reports each alarm the first time it fires.

A firing alarm is recorded every step it fires (`alarm/<name>` = 1.0, else 0.0)
so its span shows in TensorBoard and the report, but announced only once: a
warning repeated every step would bury the progress bar and get ignored.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from rft_jax.monitoring import names
from rft_jax.monitoring.alarms import ALARMS, Alarm, AlarmConfig
from rft_jax.monitoring.history import MetricHistory


@dataclass(frozen=True)
class AlarmEvent:
    """The first firing of one alarm: what it saw and what to do about it."""

    step: int
    name: str
    message: str
    fix: str

    def format(self) -> str:
        return f"ALARM {self.name} at step {self.step}: {self.message}.\n  fix: {self.fix}"


@dataclass
class AlarmMonitor:
    config: AlarmConfig = field(default_factory=AlarmConfig)
    alarms: Mapping[str, Alarm] = field(default_factory=lambda: dict(ALARMS))
    history: MetricHistory = field(default_factory=MetricHistory)
    announced: set[str] = field(default_factory=set)

    def update(self, step: int, metrics: Mapping[str, object]) -> tuple[dict[str, float], list[AlarmEvent]]:
        """Add one step's metrics; return `{alarm/<name>: 0 or 1}` and the alarms firing for the first time."""
        self.history.append(step, {k: v for k, v in metrics.items() if not k.startswith(names.ALARM_PREFIX)})
        flags: dict[str, float] = {}
        new_events: list[AlarmEvent] = []
        for name, alarm in self.alarms.items():
            message = alarm.check(self.history, self.config)
            flags[names.ALARM_PREFIX + name] = 0.0 if message is None else 1.0
            if message is not None and name not in self.announced:
                self.announced.add(name)
                new_events.append(AlarmEvent(step, name, message, alarm.fix))
        return flags, new_events

    def replay(self, metric_records: Iterable[Mapping[str, object]],
               alarm_records: Iterable[Mapping[str, object]]) -> None:
        """Picks a resumed run up where it stopped: the history of the steps it kept (metrics.jsonl) and the alarms
        already announced (alarms.jsonl), so the checks see the run's start and no alarm is announced twice."""
        for record in metric_records:
            step = record.get("step")
            if isinstance(step, int):  # JSON has no NaN: a null was a non-finite value, which checks must still see
                self.history.append(step, {k: math.nan if v is None else v for k, v in record.items()
                                           if k not in ("step", "time") and not k.startswith(names.ALARM_PREFIX)})
        self.announced.update(str(r["name"]) for r in alarm_records if "name" in r)
