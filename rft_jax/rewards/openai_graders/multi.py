"""OpenAI `multi`: named sub-grades combined per sample by the `calculate_output` formula.

Each sub-grader's score is logged as a component under its key; their metrics as `<key>/<metric>`.
If any sub-grader failed on a sample, that sample's grade is an error (score 0.0), as in `aggregate`:
a formula over a missing part would reward the wrong thing.
"""

from __future__ import annotations

import ast

from rft_jax.rewards.openai_graders import formula
from rft_jax.rewards.result import RewardResult


def combine(grader: dict, parts: dict[str, list[RewardResult]]) -> list[RewardResult]:
    tree = formula.parse(grader["calculate_output"], parts)
    size = len(next(iter(parts.values())))
    return [combine_one(tree, {name: results[i] for name, results in parts.items()}) for i in range(size)]


def combine_one(tree: ast.Expression, results: dict[str, RewardResult]) -> RewardResult:
    scores = {name: r.score for name, r in results.items()}
    errors = [f"{name}: {r.error}" for name, r in results.items() if r.error]
    if errors:
        return RewardResult(0.0, components=scores, error="; ".join(errors))
    metrics = {f"{name}/{k}": v for name, r in results.items() for k, v in {**r.components, **r.metrics}.items()}
    try:
        value = formula.evaluate(tree, scores)
    except (ArithmeticError, ValueError) as err:
        return RewardResult(0.0, components=scores, metrics=metrics, error=f"calculate_output: {err}")
    return RewardResult(value, components=scores, metrics=metrics)
