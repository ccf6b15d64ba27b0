"""Seeded train/validation/test split, optionally stratified by a metadata field.

Stratifying keeps, e.g., the difficulty mix the same in every split, so a test
score is not moved by an unlucky draw of easy prompts.
"""

from __future__ import annotations

import collections

import numpy as np

from rft_jax.data.example import Example


def split_examples(examples: list[Example], fractions: dict[str, float], *, seed: int,
                   stratify_by: str | None = None) -> dict[str, list[Example]]:
    """Split into named parts with the given fractions (normalised to sum to 1)."""
    total = sum(fractions.values())
    if total <= 0 or any(f < 0 for f in fractions.values()):
        raise ValueError(f"fractions must be non-negative with a positive sum, got {fractions}")
    groups: dict[object, list[int]] = collections.defaultdict(list)
    for i, ex in enumerate(examples):
        key = _stratum(ex, stratify_by) if stratify_by else None
        groups[key].append(i)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {name: [] for name in fractions}
    for key in sorted(groups, key=repr):  # sorted so the result does not depend on file order of strata
        indices = np.array(groups[key])
        rng.shuffle(indices)
        for name, chunk in zip(fractions, _cut(indices, [f / total for f in fractions.values()])):
            parts[name] += chunk.tolist()
    return {name: [examples[i] for i in sorted(idx)] for name, idx in parts.items()}


def _stratum(ex: Example, field: str) -> object:
    if field not in ex.metadata:
        raise ValueError(f"example {ex.id} has no metadata field {field!r} to stratify by")
    value = ex.metadata[field]
    return value if isinstance(value, (str, int, float, bool)) or value is None else repr(value)


def _cut(indices: np.ndarray, shares: list[float]) -> list[np.ndarray]:
    """Cut by cumulative rounding, so part sizes sum to len(indices) exactly."""
    bounds = np.round(np.cumsum([0.0] + shares) * len(indices)).astype(int)
    return [indices[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
