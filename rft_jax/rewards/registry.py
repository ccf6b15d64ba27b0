"""The one table of built-in rewards. To add a reward: write a function, add a row here.

A reward is `fn(example, completion, **params) -> float | RewardResult`; a row may
also give a batched form `batch_fn(examples, completions, **params) -> list`,
whether the reward needs `reference_answer`, and how to render a reference answer
as an ideal completion (used by `rft-jax reward test`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

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


REWARDS: dict[str, RewardEntry] = {
    "math_answer": RewardEntry(math_answer.math_answer, render_reference=math_answer.render_reference),
    "answer_format": RewardEntry(functools.partial(string_check.regex_format, **string_check.ANSWER_FORMAT),
                                 needs_reference=False, render_reference=math_answer.render_reference),
    "string_check": RewardEntry(string_check.string_check),
    "regex_format": RewardEntry(string_check.regex_format, needs_reference=False),
    "text_similarity": RewardEntry(text_similarity.text_similarity),
    "json_schema": RewardEntry(json_schema.json_schema, render_reference=json_schema.render_reference),
    "sql_result": RewardEntry(sql_result.sql_result, render_reference=sql_result.render_reference),
    "code_tests": RewardEntry(code_tests.code_tests, batch_fn=code_tests.code_tests_batch, needs_reference=False,
                               render_reference=code_tests.render_reference),
    "length_penalty": RewardEntry(length_penalty.length_penalty, needs_reference=False),
    "language_consistency": RewardEntry(language_consistency.language_consistency, needs_reference=False),
    "judge": RewardEntry(judge.judge_reward, batch_fn=judge.judge_reward_batch, needs_reference=False),
    "remote": RewardEntry(client.remote_reward, batch_fn=client.remote_reward_batch, needs_reference=False),
    "openai_grader": RewardEntry(openai_graders.openai_grader, batch_fn=openai_graders.openai_grader_batch,
                                 needs_reference=False, render_reference=openai_graders.render_reference),
}
"""`openai_grader` is what an OpenAI grader JSON ({"type": ...}) becomes in parse_spec (see spec.py)."""
