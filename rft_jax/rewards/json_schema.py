"""`json_schema`: find the JSON in the output, validate it, and give credit per matching field.

Score = share of the reference's leaf fields matched, minus `schema_penalty` when
the object does not validate; `-malformed_penalty` when no JSON object is found.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from rft_jax.data.example import Example
from rft_jax.rewards.result import RewardResult

_FENCE = re.compile(r"```(?:json)?\s*\n?(.*?)```", re.S | re.I)


def find_json(text: str) -> Any | None:
    """The last fenced ```json block that parses, else the first balanced {...} or [...] that does."""
    for block in reversed(_FENCE.findall(text)):
        try:
            return json.loads(block)
        except json.JSONDecodeError:
            pass
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                return decoder.raw_decode(text, i)[0]
            except json.JSONDecodeError:
                continue
    return None


def leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested objects to dotted paths; lists are compared whole."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(leaves(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def values_match(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(a, str) and isinstance(b, str):
        return " ".join(a.lower().split()) == " ".join(b.lower().split())
    return a == b


def json_schema(example: Example, completion: str, *, schema: dict | None = None,
                schema_penalty: float = 0.25, malformed_penalty: float = 0.5) -> RewardResult:
    import jsonschema  # lazy: only this grader needs it

    schema = schema if schema is not None else example.metadata.get("schema")
    value = find_json(completion)
    if value is None:
        return RewardResult(-malformed_penalty, metrics={"parsed": 0.0, "schema_valid": 0.0, "field_accuracy": 0.0})
    valid = True
    if schema is not None:
        valid = jsonschema.Draft202012Validator(schema).is_valid(value)
    reference = leaves(example.reference_answer) if example.reference_answer is not None else {}
    got = leaves(value) if isinstance(value, dict) else {}
    accuracy = (sum(k in got and values_match(got[k], v) for k, v in reference.items()) / len(reference)
                if reference else float(valid))
    score = accuracy - (0.0 if valid else schema_penalty)
    return RewardResult(score, metrics={"parsed": 1.0, "schema_valid": float(valid), "field_accuracy": accuracy})


def render_reference(example: Example) -> str:
    return "```json\n" + json.dumps(example.reference_answer) + "\n```"
