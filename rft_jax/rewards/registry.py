"""The one table of built-in rewards. To add a reward: write a function, add a row here.

A reward is `fn(example, completion, **params) -> float | RewardResult`; a row may
also give a batched form `batch_fn(examples, completions, **params) -> list`,
whether the reward needs `reference_answer`, how to render a reference answer
as an ideal completion (used by `rft-jax reward test`), and the range of its scores
(a score outside it is a per-sample error, never trained on).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

from rft_jax.rewards import (
    code_tests,
    json_schema,
    language_consistency,
    length_penalty,
    math_answer,
    sql_result,
    string_check,
    text_similarity,
)
from rft_jax.rewards.judge import reward as judge
from rft_jax.rewards.openai_graders import dispatch as openai_graders
from rft_jax.rewards.remote import client


@dataclasses.dataclass(frozen=True)
class RewardEntry:
    fn: Callable
    batch_fn: Callable | None = None
    needs_reference: bool = True
    render_reference: Callable | None = None
    """example -> an ideal completion, for `reward test`; None: str(reference_answer)."""
    score_range: tuple[float, float] | Callable[..., tuple[float, float]] = (-math.inf, math.inf)
    """(low, high) of the scores, or a function of the reward's parameters giving it. A `module:function`
    reward declares it as an attribute, `fn.score_range = (0.0, 1.0)`; undeclared, any finite score goes."""
    check: Callable[..., None] | None = None
    """Called with the reward's parameters when it is built: raises when the reward cannot run here (e.g. no
    working sandbox), so the run stops before any compute instead of scoring every sample 0 with an error."""


UNIT = (0.0, 1.0)


def math_answer_range(format_credit: float = 0.0, **_: Any) -> tuple[float, float]:
    return min(0.0, format_credit), max(1.0, format_credit)


def json_schema_range(schema_penalty: float = 0.25, malformed_penalty: float = 0.5, **_: Any) -> tuple[float, float]:
    """accuracy in [0, 1], less schema_penalty when the schema fails; -malformed_penalty when no JSON is found."""
    return min(0.0, -schema_penalty, -malformed_penalty), max(1.0, 1.0 - schema_penalty, -malformed_penalty)


REWARDS: dict[str, RewardEntry] = {
    "math_answer": RewardEntry(math_answer.math_answer, render_reference=math_answer.render_reference,
                               score_range=math_answer_range),
    "answer_format": RewardEntry(functools.partial(string_check.regex_format, **string_check.ANSWER_FORMAT),
                                 needs_reference=False, render_reference=math_answer.render_reference,
                                 score_range=UNIT),
    "string_check": RewardEntry(string_check.string_check, score_range=UNIT),
    "regex_format": RewardEntry(string_check.regex_format, needs_reference=False, score_range=UNIT),
    "text_similarity": RewardEntry(text_similarity.text_similarity, score_range=UNIT),
    "json_schema": RewardEntry(json_schema.json_schema, render_reference=json_schema.render_reference,
                               score_range=json_schema_range),
    "sql_result": RewardEntry(sql_result.sql_result, render_reference=sql_result.render_reference, score_range=UNIT),
    "code_tests": RewardEntry(code_tests.code_tests, batch_fn=code_tests.code_tests_batch, needs_reference=False,
                               render_reference=code_tests.render_reference, score_range=UNIT,
                               check=code_tests.check_sandbox),
    "length_penalty": RewardEntry(length_penalty.length_penalty, needs_reference=False, score_range=(-1.0, 0.0)),
    "language_consistency": RewardEntry(language_consistency.language_consistency, needs_reference=False,
                                         score_range=UNIT),
    "judge": RewardEntry(judge.judge_reward, batch_fn=judge.judge_reward_batch, needs_reference=False),
    "remote": RewardEntry(client.remote_reward, batch_fn=client.remote_reward_batch, needs_reference=False),
    "openai_grader": RewardEntry(openai_graders.openai_grader, batch_fn=openai_graders.openai_grader_batch,
                                 needs_reference=False, render_reference=openai_graders.render_reference),
}
"""`openai_grader` is what an OpenAI grader JSON ({"type": ...}) becomes in parse_spec (see spec.py)."""


def score_range(scorer: Any) -> tuple[float, float]:
    """The scores a built scorer can give: its entry's declared range, or an aggregate's weighted sum of its
    parts' ranges. A scorer of another kind declares nothing: any finite score."""
    parts = getattr(scorer, "parts", None)
    if parts is not None:
        low = high = 0.0
        for weight, part in parts.values():
            if weight:  # weight 0 would make 0 * inf = nan
                a, b = sorted(weight * bound for bound in score_range(part))
                low, high = low + a, high + b
        return low, high
    entry = getattr(scorer, "entry", None)
    if not isinstance(entry, RewardEntry):
        return -math.inf, math.inf
    declared = getattr(entry.fn, "score_range", entry.score_range)
    low, high = declared(**scorer.params) if callable(declared) else declared
    return float(low), float(high)
