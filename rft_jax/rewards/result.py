"""What a reward returns: a score, named components, logged metrics, and any error."""

from __future__ import annotations

import dataclasses
import math
import numbers


@dataclasses.dataclass(frozen=True)
class RewardResult:
    score: float
    components: dict[str, float] = dataclasses.field(default_factory=dict)
    """Named parts of the score (e.g. per weighted component of an `aggregate`), logged separately."""
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    """Diagnostics that are not part of the score (e.g. format_ok, rows_matched)."""
    error: str | None = None
    """Set when the reward failed for this sample; the score is then 0.0."""


def failed(error: str) -> RewardResult:
    return RewardResult(0.0, error=error[:500])


def coerce(value: object) -> RewardResult:
    """Accept what a user reward returns (a number or a RewardResult) and check it is finite."""
    if isinstance(value, RewardResult):
        result = value
    elif isinstance(value, numbers.Real):  # float, int, bool, numpy scalars
        result = RewardResult(float(value))
    else:
        return failed(f"reward returned {type(value).__name__}, expected a float or RewardResult")
    if not isinstance(result.score, (int, float)) or not math.isfinite(result.score):
        return failed(f"reward returned a non-finite score {result.score!r}")
    return dataclasses.replace(result, score=float(result.score))
