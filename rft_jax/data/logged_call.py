"""One logged model call (or one table row), reduced to what an RFT example needs.

Each source reader (logs_bedrock, logs_openai, tables) returns a LoggedCall, so filtering,
de-duplication and the output record are written once, in convert.py and here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

from rft_jax.data.example import KNOWN_FIELDS


@dataclasses.dataclass(frozen=True)
class LoggedCall:
    messages: list[dict]
    """The prompt: RFT turns with string content, ending with a user turn."""
    tools: list[dict] | None = None
    """OpenAI function schemas the model was offered."""
    response: str | None = None
    """The logged model's answer: unverified, so metadata unless the user says it is a reference."""
    reference: Any = None
    """A verified answer (a table's ground truth)."""
    model: str | None = None
    request_id: str | None = None
    timestamp: dt.datetime | None = None
    example_id: str | int | None = None
    """An id the source already gave the example (a table's `id` column)."""
    metadata: dict = dataclasses.field(default_factory=dict)
    """The caller's tags (Bedrock requestMetadata, OpenAI metadata) or a table's extra columns."""


def parse_time(value: Any) -> dt.datetime | None:
    """A logged time as an aware UTC datetime: ISO-8601 text (Bedrock) or Unix seconds (OpenAI `created`)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(value, tz=dt.timezone.utc)
    if not isinstance(value, str):
        return None
    try:
        when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def metadata_text(value: Any) -> str:
    """How a metadata value compares with `--where key=value`: strings as they are, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def rft_record(call: LoggedCall, *, response_as_reference: bool = False) -> dict:
    """The RFT JSONL object: messages, tools, reference or logged response, provenance, then metadata."""
    out: dict[str, Any] = {} if call.example_id is None else {"id": call.example_id}
    out["messages"] = call.messages
    if call.tools:
        out["tools"] = call.tools
    if call.reference is not None:
        out["reference_answer"] = call.reference
    if call.response is not None:
        out["reference_answer" if response_as_reference and call.reference is None else "logged_response"] = (
            call.response)
    provenance = {"source_model": call.model, "source_id": call.request_id,
                  "source_timestamp": call.timestamp.isoformat() if call.timestamp else None}
    out.update({k: v for k, v in provenance.items() if v is not None})
    out.update({k: v for k, v in call.metadata.items() if k not in out and k not in KNOWN_FIELDS})
    return out
