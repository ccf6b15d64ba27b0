"""`rft-jax baseline`: measure the base model before training, and say whether RFT can start.

Greedy pass@1, pass@k for k up to the group size (unbiased estimator), reward mean and
spread, the share of prompts whose k samples all score the same (no learning signal),
the share with at least one success, format compliance where the reward reports it,
truncation and length percentiles; then a verdict with reasons and the next step.

With `--reasoning.mode on` (docs/reasoning.md) the model thinks, then answers, the
reward reads the answer, and the `reasoning/*` metrics of the k samples (think and
answer length, budget hits, well-formed answers) show whether the budgets fit.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import jax
import tyro

from rft_jax.cli.eval import completion_budget
from rft_jax.data.reasoning import ReasoningConfig
from rft_jax.model.registry import DEFAULT_MODEL
from rft_jax.monitoring.names import REASONING_PREFIX


@dataclasses.dataclass(frozen=True)
class BaselineOptions:
    """What `rft-jax baseline` measures, and where it writes the result."""

    data: str
    """RFT JSONL file of prompts."""
    model: str = DEFAULT_MODEL
    """Registry key, Hugging Face folder or .gguf file."""
    reward: str = "math_answer"
    """Reward spec (name, module:function, JSON)."""
    samples: int = 8
    """k: samples per prompt (the GRPO group size G)."""
    limit: int = 64
    """Prompts to measure (0: all)."""
    max_new_tokens: int | None = None
    """Tokens sampled per completion at most (default 128). With reasoning on it is think_budget +
    answer_budget: leave it out, or give that sum."""
    temperature: float = 1.0
    """Temperature of the k samples (the greedy pass uses 0)."""
    success_threshold: float = 1.0
    """A sample with at least this reward counts as a success."""
    out: str = "baseline.json"
    """The eval JSON written (schema in docs/monitoring.md), with the metrics and the verdict."""
    reasoning: ReasoningConfig = ReasoningConfig()
    """Think within a budget, then answer (docs/reasoning.md), as `rft-jax train --reasoning.*` will."""


def main(argv: list[str]) -> int:
    args = tyro.cli(BaselineOptions, args=argv, prog="rft-jax baseline", description=__doc__)
    try:
        max_new_tokens = completion_budget(args.max_new_tokens, args.reasoning)
    except ValueError as err:
        print(f"rft-jax baseline: {err}", file=sys.stderr)
        return 2

    from rft_jax.data.problems import DatasetError  # noqa: PLC0415
    from rft_jax.data.reasoning import plan_reasoning  # noqa: PLC0415
    from rft_jax.data.validate import id_list, load_examples  # noqa: PLC0415
    from rft_jax.evaluation.baseline import baseline  # noqa: PLC0415
    from rft_jax.model import load_model  # noqa: PLC0415
    from rft_jax.model.registry import resolve_compute_dtype  # noqa: PLC0415
    from rft_jax.model.tokenizer import load_tokenizer  # noqa: PLC0415
    from rft_jax.rewards import build_reward  # noqa: PLC0415

    tokenizer = load_tokenizer(args.model)
    scorer = build_reward(args.reward)
    try:  # a measurement set may repeat a prompt, as an evaluation set may (`rft-jax eval`)
        plan = plan_reasoning(args.reasoning, tokenizer)  # always: reasoning off still switches a native template
        loaded = load_examples(args.data, tokenizer=tokenizer, require_reference=scorer.needs_reference,
                               allow_duplicate_prompts=True)
    except (DatasetError, OSError, ValueError) as err:  # user errors: a message, not a traceback
        print(f"rft-jax baseline: {err}", file=sys.stderr)
        return 2
    if loaded.repeated:
        print(f"rft-jax baseline: warning: {args.data} has {len(loaded.repeated)} duplicate prompts (ids "
              f"{id_list(loaded.repeated)}); each is measured as a separate example", file=sys.stderr)
    examples = loaded.examples[: args.limit] if args.limit else loaded.examples
    if not examples:
        print(f"rft-jax baseline: {args.data} holds no examples: give it RFT JSONL, one "
              '{"messages": [...]} object per line (docs/data_and_rewards.md)', file=sys.stderr)
        return 2
    dtype = resolve_compute_dtype("auto")
    cfg, params = load_model(args.model, dtype=dtype)
    summary, verdict, greedy, sampled = baseline(
        params, cfg, tokenizer, examples, scorer, samples=args.samples, max_new_tokens=max_new_tokens,
        temperature=args.temperature, success_threshold=args.success_threshold, dtype=dtype, key=jax.random.key(0),
        reasoning=plan)
    # the k samples' numbers, as the summary's: training samples at this temperature
    metrics = summary.to_metrics() | {k: v for k, v in sampled.metrics.items() if k.startswith(REASONING_PREFIX)}
    width = max(len(k) for k in metrics)
    print(f"baseline of {args.model} on {len(examples)} prompts of {args.data} "
          f"(k={args.samples}, T={args.temperature})")
    for k, v in metrics.items():
        print(f"  {k:<{width}}  {v:.4f}" if isinstance(v, float) and not math.isnan(v) else f"  {k:<{width}}  {v}")
    print(f"\nverdict: {verdict.title}")
    for reason in verdict.reasons:
        print(f"  - {reason}")
    print(f"next step: {verdict.next_step}")
    doc = greedy.to_json("base", model=args.model, dataset=args.data)
    doc["metrics"] = {**doc["metrics"], **metrics}
    doc["verdict"] = verdict.to_dict()
    Path(args.out).write_text(json.dumps(doc, indent=1))
    print(f"wrote {args.out}")
    return 0
