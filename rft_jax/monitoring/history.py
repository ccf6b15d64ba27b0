"""The metric stream seen so far, as one compact (steps, values) series per metric name.

Alarms compare the present with the run's start (entropy) and with trends over
many steps (KL, length), so they need the whole history, not just the last step.
Values live in `array.array` buffers (16 bytes a point), so a 100k-step run with
fifty metrics stays under 100 MB.
"""

from __future__ import annotations

import array
import math
from collections.abc import Iterable, Mapping

import numpy as np


class MetricHistory:
    """Append-only per-metric series; non-numeric values are ignored, NaN and inf are kept."""

    def __init__(self) -> None:
        self._steps: dict[str, array.array] = {}
        self._values: dict[str, array.array] = {}

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, object]]) -> MetricHistory:
        """Rebuild a history from `metrics.jsonl` records (null values are skipped)."""
        history = cls()
        for record in records:
            step = record.get("step")
            if isinstance(step, int):
                history.append(step, {k: v for k, v in record.items() if k not in ("step", "time") and v is not None})
        return history

    def append(self, step: int, metrics: Mapping[str, object]) -> None:
        for name, value in metrics.items():
            try:
                number = float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                continue
            if name not in self._values:
                self._steps[name] = array.array("q")
                self._values[name] = array.array("d")
            self._steps[name].append(int(step))
            self._values[name].append(number)

    def names(self) -> list[str]:
        return list(self._values)

    def series(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """`(steps, values)` of one metric, finite points only; empty arrays when never logged."""
        if name not in self._values:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        # Copies, not np.frombuffer views: a live view would forbid the next append.
        steps = np.array(self._steps[name], np.int64)
        values = np.array(self._values[name], np.float64)
        finite = np.isfinite(values)
        return steps[finite], values[finite]

    def latest(self, name: str) -> float | None:
        """The last logged value, NaN and inf included (so a non-finite loss can be seen)."""
        values = self._values.get(name)
        return values[-1] if values else None

    def recent(self, name: str, n: int) -> np.ndarray:
        """The last `n` finite values (fewer early in the run)."""
        return self.series(name)[1][-n:]


def is_bad(value: float | None) -> bool:
    """True for NaN or infinity; None (never logged) is not bad."""
    return value is not None and not math.isfinite(value)
