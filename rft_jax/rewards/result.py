"""What a reward returns: a score, named components, logged metrics, and any error; and the checks that turn
whatever a reward's code handed back into one valid result per sample."""

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


def failures(n: int, error: str) -> list[RewardResult]:
    """n separate error results (separate objects: a RewardResult's dicts are mutable)."""
    return [failed(error) for _ in range(n)]


def output_problem(results: object, n: int) -> str | None:
    """What is wrong with a scorer's output for n samples, or None when it is n RewardResults."""
    if not isinstance(results, (list, tuple)):
        return f"reward returned {type(results).__name__}, expected a list of {n} RewardResults"
    if len(results) != n:
        return f"reward returned {len(results)} results for {n} samples"
    for i, result in enumerate(results):
        if not isinstance(result, RewardResult):
            return f"reward returned {type(result).__name__} at position {i}, expected RewardResult"
    return None


def score_problem(result: RewardResult, low: float, high: float) -> str | None:
    """Why a result's score cannot be trained on (not a finite number, or outside the reward's declared
    [low, high]), or None."""
    score = result.score
    if not isinstance(score, numbers.Real) or not math.isfinite(score):  # even beside an error: it is trained on
        return f"reward returned a non-finite score {score!r}"
    if not low - 1e-9 <= score <= high + 1e-9:  # float rounding is no error; an error's score is trained on too
        return f"reward returned {float(score):g}, outside its range [{low:g}, {high:g}]"
    return None


def in_range(results: list[RewardResult], low: float, high: float, name: str) -> list[RewardResult]:
    """The results, each with a score that is NaN, infinite or out of range turned into a per-sample error."""
    return [failed(f"{name}: {problem}") if (problem := score_problem(r, low, high)) else r for r in results]
