"""Turn model-invocation logs into RFT JSONL, so existing traffic becomes training prompts.

Accepted log records (one JSON object a line) hold a request with `messages` and
the model's response, in either of the common shapes:
  {"request": {"messages": [...], "tools"?: [...]}, "response": {"choices": [{"message": {...}}]}}
  {"messages": [...], "response": "text" | {"content": "..."}}
The prompt is the request's messages; the logged response becomes the
`reference_answer` only when asked (it is the old model's answer, not a verified one),
otherwise it is kept as metadata `logged_response` for review.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from rft_jax.data.example import prompt_messages


def convert_record(record: dict, *, response_as_reference: bool = False) -> dict | None:
    request = record.get("request") if isinstance(record.get("request"), dict) else record
    messages = request.get("messages")
    if not isinstance(messages, list):
        return None
    messages = prompt_messages(messages)
    if not messages:
        return None
    out: dict[str, Any] = {"messages": messages}
    if request.get("tools"):
        out["tools"] = request["tools"]
    response = response_text(record.get("response"))
    if response is not None:
        out["reference_answer" if response_as_reference else "logged_response"] = response
    for key in ("id", "model"):  # provenance, kept as metadata
        if key in record:
            out[f"source_{key}"] = record[key]
    if isinstance(record.get("metadata"), dict):
        out.update({k: v for k, v in record["metadata"].items() if k not in out})
    return out


def response_text(response: Any) -> str | None:
    if response is None:
        return None
    if isinstance(response, str):
        return response
    if isinstance(response, dict):
        if "choices" in response and response["choices"]:
            return response_text(response["choices"][0].get("message") or response["choices"][0].get("text"))
        if isinstance(response.get("content"), str):
            return response["content"]
        if isinstance(response.get("output_text"), str):
            return response["output_text"]
    return None


def convert_lines(lines: Iterator[str], **kwargs: Any) -> tuple[list[dict], list[int]]:
    """Returns converted records and the line numbers that could not be converted."""
    converted, skipped = [], []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            out = convert_record(json.loads(text), **kwargs)
        except (json.JSONDecodeError, AttributeError):
            out = None
        if out is None:
            skipped.append(number)
        else:
            converted.append(out)
    return converted, skipped
