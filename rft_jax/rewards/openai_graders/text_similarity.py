"""OpenAI `text_similarity`: the similarity of the templated `input` and `reference`, in [0, 1], is the score.

`pass_threshold` does not change the score: as in OpenAI's graders (a multi grader over a text_similarity
with pass_threshold 0.9 still sees the 0-1 similarity), it only marks the sample, logged as the `passed`
metric. The metrics are computed as rewards/text_similarity.py describes; `cosine` is refused when the
grader is read (it needs an embeddings model).
"""

from __future__ import annotations

from rft_jax.rewards.openai_graders.templating import render
from rft_jax.rewards.result import RewardResult
from rft_jax.rewards.text_similarity import similarity


def grade(grader: dict, item: dict, sample: dict) -> RewardResult:
    value = similarity(grader["evaluation_metric"], render(grader["input"], item, sample),
                       render(grader["reference"], item, sample))
    threshold = grader.get("pass_threshold")
    return RewardResult(value, metrics={} if threshold is None else {"passed": float(value >= threshold)})
