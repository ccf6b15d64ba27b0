"""OpenAI `string_check`: 1.0 or 0.0 from comparing the templated `input` with the templated `reference`.

eq: equal; ne (or neq): not equal; like: the input contains the reference; ilike: the same, ignoring case.
Comparisons are exact as documented (case-sensitive, no trimming), and the same as rft_jax's own string_check.
"""

from __future__ import annotations

from rft_jax.rewards.openai_graders.templating import render
from rft_jax.rewards.string_check import compare


def grade(grader: dict, item: dict, sample: dict) -> float:
    operation = "ne" if grader["operation"] == "neq" else grader["operation"]
    text, target = render(grader["input"], item, sample), render(grader["reference"], item, sample)
    return float(compare(text, target, operation))
