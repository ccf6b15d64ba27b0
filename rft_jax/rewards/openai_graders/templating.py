"""OpenAI grader templating: `{{ item.x }}` and `{{ sample.output_text }}` filled in from the row and the completion.

    item    the dataset row as it was read: reference_answer, messages, and every other field of the row
            (for rows that nest fields under `metadata`, as Bedrock's do, `{{ item.metadata.x }}`)
    sample  what the policy wrote: output_text, output_json (the completion parsed as JSON, when it is JSON),
            output_tools, choices
Paths are JSON-path-like, as in OpenAI's docs: `item.a.b`, `item.list[0]`, `sample.output_tools[0].function.name`.
A string value is put in as it is; anything else as JSON (so 1.0 stays `1.0`, a dict becomes `{"a": 1}`).
A path that names nothing in this row raises TemplateError: that sample's grade is an error, not a silent "".
"""

from __future__ import annotations

import json
import re
from typing import Any

from rft_jax.data.example import Example

PLACEHOLDER = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_NAMESPACE = re.compile(r"\s*([A-Za-z_]\w*)")
_STEP = re.compile(r"\s*(?:\.\s*([A-Za-z_][\w-]*)|\[\s*(\d+)\s*\]|\[\s*\"([^\"]*)\"\s*\]|\[\s*'([^']*)'\s*\])")
SAMPLE_FIELDS = ("output_text", "output_json", "output_tools", "choices")
"""What a completion provides; `output_audio` is absent because rft_jax policies write text."""
_FENCE = re.compile(r"```(?:json)?\s*\n(.*?)```", re.S | re.I)


class TemplateError(ValueError):
    """A placeholder that is malformed, or names a field this row or sample does not have."""


def parse_path(expr: str) -> tuple[str, list[str | int]]:
    """`sample.output_tools[0].function.name` -> ("sample", ["output_tools", 0, "function", "name"])."""
    match = _NAMESPACE.match(expr)
    if not match:
        raise TemplateError(f"{{{{ {expr} }}}}: expected namespace.variable, e.g. item.reference_answer")
    namespace, pos, steps = match.group(1), match.end(), []
    while pos < len(expr.rstrip()):
        step = _STEP.match(expr, pos)
        if not step:
            raise TemplateError(f"{{{{ {expr} }}}}: cannot read the path from {expr[pos:]!r}")
        name, index, dq, sq = step.groups()
        steps.append(int(index) if index is not None else next(s for s in (name, dq, sq) if s is not None))
        pos = step.end()
    return namespace, steps


def check_path(expr: str) -> None:
    """Configuration-time check: a known namespace and, for sample, a field a completion provides."""
    namespace, steps = parse_path(expr)
    if namespace not in ("item", "sample"):
        raise TemplateError(f"{{{{ {expr} }}}}: the namespace is 'item' or 'sample', not {namespace!r}")
    if not steps:
        example = "sample.output_text" if namespace == "sample" else "item.reference_answer"
        raise TemplateError(f"{{{{ {expr} }}}}: name a variable, e.g. {example}")
    if namespace == "sample" and steps[0] not in SAMPLE_FIELDS:
        raise TemplateError(f"{{{{ {expr} }}}}: a sample has {', '.join(SAMPLE_FIELDS)} (rft_jax policies write "
                            "text, so there is no output_audio)")


def check_template(template: Any, where: str) -> None:
    if not isinstance(template, str):
        raise TemplateError(f"{where} must be a string, got {type(template).__name__}")
    for expr in PLACEHOLDER.findall(template):
        check_path(expr)


def lookup(namespaces: dict[str, Any], expr: str) -> Any:
    namespace, steps = parse_path(expr)
    value, seen = namespaces[namespace], namespace
    for step in steps:
        if isinstance(step, int):
            if not isinstance(value, list) or step >= len(value):
                size = f"a list of {len(value)}" if isinstance(value, list) else type(value).__name__
                raise TemplateError(f"{{{{ {expr} }}}}: {seen} is {size}, no [{step}]")
            value = value[step]
        else:
            if not isinstance(value, dict) or step not in value:
                if seen == "sample.output_json" and not value:
                    raise TemplateError(f"{{{{ {expr} }}}}: the completion is not a JSON object or array")
                keys = f"keys {sorted(value)[:10]}" if isinstance(value, dict) else type(value).__name__
                raise TemplateError(f"{{{{ {expr} }}}}: {seen} has no {step!r} ({keys})")
            value = value[step]
        seen = f"{seen}[{step}]" if isinstance(step, int) else f"{seen}.{step}"
    return value


def as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return "" if value is None else json.dumps(value, ensure_ascii=False)


def render(template: str, item: dict, sample: dict) -> str:
    namespaces = {"item": item, "sample": sample}
    return PLACEHOLDER.sub(lambda m: as_text(lookup(namespaces, m.group(1))), template)


def item_of(example: Example) -> dict:
    """The dataset row the example was read from (OpenAI's `item`)."""
    return example.to_record()


def parse_json_output(text: str) -> Any:
    """The completion as JSON (bare, or in one ```json fence); {} when it is not a JSON object or array."""
    for candidate in (text.strip(), *(block.strip() for block in _FENCE.findall(text)[-1:])):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, (dict, list)):
            return value
    return {}


def sample_of(completion: str) -> dict:
    """OpenAI's `sample` for a text completion: no tool calls, one choice."""
    return {"output_text": completion, "output_json": parse_json_output(completion), "output_tools": [],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": completion}}]}
