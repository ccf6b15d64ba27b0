"""Measure the base model before training, and say whether RFT can start (`rft-jax baseline`).

Greedy pass@1, pass@k for k up to the group size (unbiased estimator), reward mean and
spread, the share of prompts whose k samples all score the same (no learning signal),
the share with at least one success, format compliance where the reward reports it,
truncation and length percentiles; then a verdict with reasons and the next step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import jax
import numpy as np

if TYPE_CHECKING:
    from rft_jax.data.reasoning import ReasoningPlan
    from rft_jax.evaluation import EvalSummary, Verdict
    from rft_jax.evaluation.evaluate import EvalResult


class Baseline(NamedTuple):
    summary: EvalSummary  # of the k samples per prompt
    verdict: Verdict
    greedy: EvalResult  # its samples go into the eval JSON
    sampled: EvalResult  # the k samples: in reasoning mode their reasoning/* metrics are what training will see


def baseline(params, cfg, tokenizer, examples, scorer, *, samples: int, max_new_tokens: int, temperature: float,
             success_threshold: float, dtype, key: jax.Array, reasoning: ReasoningPlan | None = None) -> Baseline:
    """The k-sample summary, its verdict, and both passes of a model on examples.

    `reasoning`: a `ReasoningPlan`; both passes render, sample and score as reasoning mode does.
    """
    from rft_jax.evaluation import baseline_verdict, summarize_samples  # noqa: PLC0415
    from rft_jax.evaluation.evaluate import evaluate  # noqa: PLC0415

    common = dict(scorers={"reward": scorer}, key=key, max_new_tokens=max_new_tokens, dtype=dtype, reasoning=reasoning)
    greedy = evaluate(params, cfg, tokenizer, examples, **common)
    sampled = evaluate(params, cfg, tokenizer, examples, temperature=temperature, num_samples=samples, **common)
    rows = sampled.per_example
    fmt = np.array([r["format_ok"] for r in rows], float)
    summary = summarize_samples(
        [r["scores"]["reward"] for r in rows], success_threshold=success_threshold,
        greedy_rewards_P=[r["scores"]["reward"][0] for r in greedy.per_example],
        lengths_PxG=[r["lengths"] for r in rows], truncated_PxG=[r["truncated"] for r in rows],
        format_ok_PxG=None if np.isnan(fmt).all() else np.nan_to_num(fmt) > 0.5,
        errors_PxG=[r["errors"] for r in rows])
    return Baseline(summary, baseline_verdict(summary), greedy, sampled)
