"""A rubric: what the judge is told to look for, and the shape of the verdict it must give.

    "Rate how polite the reply is."                                  # text, scored on 0..10
    {"text": "...", "scale": [1, 5]}                                  # a number in a range
    {"text": "...", "labels": {"good": 1, "ok": 0.5, "bad": 0}}       # a label from a list
    {"text": "...", "criteria": {"accuracy": {"weight": 2, "description": "facts are right"},
                                 "tone": "friendly and brief"}}        # JSON, one score per criterion
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Criterion:
    name: str
    description: str = ""
    weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class Rubric:
    text: str
    criteria: tuple[Criterion, ...] = ()
    """Named parts scored separately (JSON verdict); the score is their weighted mean."""
    scale: tuple[float, float] = (0.0, 10.0)
    """Range of a numeric score (and of each criterion's); normalised to [0, 1]."""
    labels: tuple[tuple[str, float], ...] = ()
    """Allowed verdict labels and the [0, 1] score each stands for."""

    def default_parse(self) -> str:
        return "label" if self.labels else "json" if self.criteria else "number"

    def normalise(self, value: float) -> float:
        lo, hi = self.scale
        return (value - lo) / (hi - lo)


def _criteria(value: Any) -> tuple[Criterion, ...]:
    if value is None:
        return ()
    if isinstance(value, dict):
        items = []
        for name, spec in value.items():
            if isinstance(spec, str):
                items.append(Criterion(name, spec))
            elif isinstance(spec, (int, float)):
                items.append(Criterion(name, weight=float(spec)))
            elif isinstance(spec, dict):
                items.append(Criterion(name, str(spec.get("description", "")), float(spec.get("weight", 1.0))))
            else:
                raise ValueError(f"rubric criterion {name!r}: give a description, a weight or a dict")
        return tuple(items)
    if isinstance(value, list):
        return tuple(Criterion(str(c["name"]), str(c.get("description", "")), float(c.get("weight", 1.0)))
                     if isinstance(c, dict) else Criterion(str(c)) for c in value)
    raise ValueError("rubric 'criteria' must be a dict {name: description | weight | {...}} or a list")


def parse_rubric(spec: Any) -> Rubric:
    """A Rubric from its text or dict form (see the module docstring); fails on anything inconsistent."""
    if isinstance(spec, Rubric):
        return spec
    if isinstance(spec, str):
        spec = {"text": spec}
    if not isinstance(spec, dict) or not str(spec.get("text", "")).strip():
        raise ValueError("a rubric is its text, or a dict with a non-empty 'text'")
    unknown = set(spec) - {"text", "criteria", "scale", "labels"}
    if unknown:
        raise ValueError(f"unknown rubric keys {sorted(unknown)}; use text, criteria, scale, labels")
    scale = tuple(float(x) for x in spec.get("scale", (0, 10)))
    if len(scale) != 2 or scale[0] >= scale[1]:
        raise ValueError(f"rubric 'scale' must be [low, high] with low < high; got {spec.get('scale')}")
    labels_spec = spec.get("labels") or {}
    if isinstance(labels_spec, list):  # an ordered list, best first: scores spread from 1 down to 0
        n = len(labels_spec)
        labels_spec = {str(name): (1.0 - i / (n - 1) if n > 1 else 1.0) for i, name in enumerate(labels_spec)}
    labels = tuple((str(k), float(v)) for k, v in labels_spec.items())
    if any(not 0.0 <= v <= 1.0 for _, v in labels):
        raise ValueError("rubric label scores must lie in [0, 1]")
    criteria = _criteria(spec.get("criteria"))
    if labels and criteria:
        raise ValueError("a rubric has labels or criteria, not both")
    if criteria and sum(c.weight for c in criteria) <= 0:
        raise ValueError("rubric criterion weights must sum to a positive number")
    return Rubric(str(spec["text"]).strip(), criteria, scale, labels)
