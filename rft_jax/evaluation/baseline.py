"""`rft-jax baseline`: measure the base model before training, and say whether RFT can start.

Greedy pass@1, pass@k for k up to the group size (unbiased estimator), reward mean and
spread, the share of prompts whose k samples all score the same (no learning signal),
the share with at least one success, format compliance where the reward reports it,
truncation and length percentiles; then a verdict with reasons and the next step.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import jax
import numpy as np


def baseline(params, cfg, tokenizer, examples, scorer, *, samples: int, max_new_tokens: int, temperature: float,
             success_threshold: float, dtype, key: jax.Array):
    """(EvalSummary, Verdict, greedy EvalResult) for a model on examples."""
    from rft_jax.evaluation import baseline_verdict, summarize_samples  # noqa: PLC0415
    from rft_jax.evaluation.evaluate import evaluate  # noqa: PLC0415

    common = dict(scorers={"reward": scorer}, key=key, max_new_tokens=max_new_tokens, dtype=dtype)
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
    return summary, baseline_verdict(summary), greedy


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rft-jax baseline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", required=True)
    parser.add_argument("--reward", default="math_answer", help="reward spec (name, module:function, JSON)")
    parser.add_argument("--samples", type=int, default=8, help="k: samples per prompt (the GRPO group size)")
    parser.add_argument("--limit", type=int, default=64, help="prompts to measure (0: all)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--success-threshold", type=float, default=1.0)
    parser.add_argument("--out", default="baseline.json")
    args = parser.parse_args(argv)

    from rft_jax.data import load_dataset  # noqa: PLC0415
    from rft_jax.model import load_model  # noqa: PLC0415
    from rft_jax.model.registry import resolve_compute_dtype  # noqa: PLC0415
    from rft_jax.model.tokenizer import load_tokenizer  # noqa: PLC0415
    from rft_jax.rewards import build_reward  # noqa: PLC0415

    tokenizer = load_tokenizer(args.model)
    scorer = build_reward(args.reward)
    examples = load_dataset(args.data, tokenizer=tokenizer, require_reference=scorer.needs_reference)
    examples = examples[: args.limit] if args.limit else examples
    dtype = resolve_compute_dtype("auto")
    cfg, params = load_model(args.model, dtype=dtype)
    summary, verdict, greedy = baseline(params, cfg, tokenizer, examples, scorer, samples=args.samples,
                                        max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                        success_threshold=args.success_threshold, dtype=dtype, key=jax.random.key(0))
    metrics = summary.to_metrics()
    width = max(len(k) for k in metrics)
    print(f"baseline of {args.model} on {len(examples)} prompts of {args.data} (k={args.samples}, T={args.temperature})")
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
