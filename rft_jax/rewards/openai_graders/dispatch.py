"""The `openai_grader` reward: an OpenAI grader run over a batch of (example, completion) pairs.

Every grade is contained per sample: a template naming a field the row lacks, a python grader that
raises, an unreadable grader-model reply each give that sample RewardResult(0.0, error=...), as a
grader error scores 0 in OpenAI's RFT, while the rest of the batch is graded normally.
"""

from __future__ import annotations

import json

from rft_jax.data.example import Example
from rft_jax.rewards.openai_graders import multi, python_grader, score_model, string_check, text_similarity
from rft_jax.rewards.openai_graders.check import label
from rft_jax.rewards.openai_graders.templating import item_of, sample_of
from rft_jax.rewards.result import RewardResult, coerce, failed

PER_SAMPLE = {"string_check": string_check.grade, "text_similarity": text_similarity.grade}
BATCHED = {"python": python_grader.grade_batch, "score_model": score_model.grade_batch}


def grade_rows(grader: dict, items: list[dict], samples: list[dict]) -> list[RewardResult]:
    """Grades of (item, sample) pairs, in order; `grader` has passed check.check_grader."""
    kind = grader["type"]
    if kind == "multi":
        return multi.combine(grader, {name: grade_rows(sub, items, samples) for name, sub in grader["graders"].items()})
    if kind in BATCHED:
        return BATCHED[kind](grader, items, samples)
    return [contained(grader, item, sample) for item, sample in zip(items, samples)]


def contained(grader: dict, item: dict, sample: dict) -> RewardResult:
    try:
        return coerce(PER_SAMPLE[grader["type"]](grader, item, sample))
    except Exception as err:  # one sample's bad row must not fail its batch
        return failed(f"{label(grader)}: {err}")


def openai_grader_batch(examples: list[Example], completions: list[str], *, grader: dict) -> list[RewardResult]:
    return grade_rows(grader, [item_of(e) for e in examples], [sample_of(c) for c in completions])


def openai_grader(example: Example, completion: str, *, grader: dict) -> RewardResult:
    return openai_grader_batch([example], [completion], grader=grader)[0]


def render_reference(example: Example) -> str:
    """An ideal completion for `reward test`: the reference answer, as JSON when it is not a string
    (so graders over `sample.output_json` can read it)."""
    ref = example.reference_answer
    return ref if isinstance(ref, str) else json.dumps(ref, ensure_ascii=False)
