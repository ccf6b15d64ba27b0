"""The summary `data validate` prints after the problem list."""

from __future__ import annotations

import collections

import numpy as np

from rft_jax.data.example import message_text
from rft_jax.data.validate import Validation

GUIDANCE = (100, 10_000)  # example counts the managed RFT services recommend


def summarize(result: Validation) -> dict:
    examples = result.examples
    n = len(examples)
    if result.prompt_tokens is not None:
        lengths, unit = result.prompt_tokens, "tokens"
    else:
        lengths, unit = [sum(len(message_text(m)) for m in ex.prompt_messages) for ex in examples], "chars"
    percentiles = {}
    if lengths:
        values = np.percentile(np.asarray(lengths), [0, 50, 90, 99, 100])
        percentiles = dict(zip(("min", "p50", "p90", "p99", "max"), (int(v) for v in values)))
    metadata = collections.Counter(k for ex in examples for k in ex.metadata)
    references = collections.Counter(_type_name(ex.reference_answer) for ex in examples)
    return {
        "examples": n,
        "errors": len(result.errors),
        "warnings": len(result.problems) - len(result.errors),
        "count_guidance": _count_note(n),
        "prompt_length_unit": unit,
        "prompt_length": percentiles,
        "metadata_fields": dict(metadata),
        "reference_types": dict(references),
        "with_tools": sum(ex.tools is not None for ex in examples),
    }


def _type_name(value: object) -> str:
    if value is None:
        return "missing"
    return {bool: "bool", int: "integer", float: "number", str: "string", list: "list", dict: "object"}.get(
        type(value), type(value).__name__)


def _count_note(n: int) -> str:
    low, high = GUIDANCE
    if n < low:
        return f"{n} examples is below the recommended {low}-{high}; results may be noisy"
    if n > high:
        return f"{n} examples is above the recommended {low}-{high}; consider a subset per epoch"
    return f"{n} examples is within the recommended {low}-{high}"


def format_summary(summary: dict) -> str:
    lines = [f"examples: {summary['examples']} ({summary['count_guidance']})",
             f"errors: {summary['errors']}  warnings: {summary['warnings']}"]
    if summary["prompt_length"]:
        pct = "  ".join(f"{k}={v}" for k, v in summary["prompt_length"].items())
        lines.append(f"prompt length ({summary['prompt_length_unit']}): {pct}")
    fields = ", ".join(f"{k} ({v})" for k, v in summary["metadata_fields"].items())
    lines.append("metadata fields: " + (fields or "none"))
    types = ", ".join(f"{k} ({v})" for k, v in summary["reference_types"].items())
    lines.append("reference types: " + (types or "none"))
    if summary["with_tools"]:
        lines.append(f"examples with tools: {summary['with_tools']}")
    return "\n".join(lines)
