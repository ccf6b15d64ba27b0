"""One RFT training example: a chat prompt plus what the reward needs to judge answers.

The on-disk form is one JSON object per line in OpenAI chat format, as the managed
RFT services accept it. Fields other than the known ones are kept as metadata so a
reward can read them (e.g. `data_source`, `difficulty`, a database schema).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from rft_jax.data.chat_text import flatten_content, role_of

KNOWN_FIELDS = ("id", "messages", "reference_answer", "tools")


@dataclasses.dataclass(frozen=True)
class Example:
    id: str
    messages: list[dict]
    reference_answer: Any = None
    tools: list | None = None
    metadata: dict = dataclasses.field(default_factory=dict)

    @property
    def prompt_messages(self) -> list[dict]:
        """Messages up to and including the last user or tool turn: what the policy is shown (a conversation
        ending in tool results is continued by the model)."""
        return prompt_messages(self.messages)

    def to_record(self) -> dict:
        """The JSONL object this example was (or would be) read from."""
        record: dict[str, Any] = {"id": self.id, "messages": self.messages}
        if self.reference_answer is not None:
            record["reference_answer"] = self.reference_answer
        if self.tools is not None:
            record["tools"] = self.tools
        record.update(self.metadata)
        return record


PROMPT_END_ROLES = ("user", "tool")


def prompt_messages(messages: list[dict]) -> list[dict]:
    """Up to and including the last user or tool turn; a trailing assistant turn (a reference reply) is left out."""
    last = max((i for i, m in enumerate(messages) if m.get("role") in PROMPT_END_ROLES), default=-1)
    return list(messages[: last + 1])


def message_text(message: dict) -> str:
    """The text of a message whose content is a string or a list of text parts (other parts skipped)."""
    return flatten_content(message.get("content"), strict=False)


def flatten_messages(messages: list[dict]) -> list[dict]:
    """The messages with every content as one string (text parts joined, none as "") and OpenAI's
    "developer" role as "system"; other keys kept.

    OpenAI and Bedrock files may give content as a list of text parts. Chat templates
    and rewards expect a string: SmolLM2's template fails on a list, Qwen3's renders
    it empty. Templates know no "developer" turn (SmolLM2's would render it verbatim).
    Everything that hands messages to a template, a reward or a judge goes through this.
    """
    return [flatten_message(m) for m in messages]


def flatten_message(message: dict) -> dict:
    turn = {**message, "content": message_text(message)}
    if "role" in message:
        turn["role"] = role_of(message)
    return turn


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def stable_id(messages: list[dict], reference_answer: Any) -> str:
    """An id derived from content, so re-reading a file without ids gives the same ids."""
    digest = hashlib.sha256(canonical_json([messages, reference_answer]).encode()).hexdigest()
    return f"ex-{digest[:16]}"


def prompt_key(messages: list[dict]) -> str:
    """Key for duplicate-prompt detection: the prompt's roles and text, whitespace-normalised."""
    turns = [(m.get("role"), " ".join(message_text(m).split()), *_calls_key(m)) for m in prompt_messages(messages)]
    return hashlib.sha256(canonical_json(turns).encode()).hexdigest()


def _calls_key(message: dict) -> tuple:
    """An assistant turn's tool calls (names and arguments) as part of its prompt key; () without calls, so the
    keys of plain conversations are what they always were."""
    calls = message.get("tool_calls")
    if not calls:
        return ()
    return (canonical_json([_call_key(c) for c in calls]),)


def _call_key(call: Any) -> Any:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict):
        return call
    args = fn.get("arguments")
    if isinstance(args, str):  # OpenAI's JSON string and the object itself key alike
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            pass
    return [fn.get("name"), args]


def from_record(record: dict) -> Example:
    """Build an Example from an already-validated JSON object."""
    messages = record["messages"]
    reference = record.get("reference_answer")
    metadata = {k: v for k, v in record.items() if k not in KNOWN_FIELDS}
    return Example(
        id=str(record["id"]) if record.get("id") is not None else stable_id(messages, reference),
        messages=messages,
        reference_answer=reference,
        tools=record.get("tools"),
        metadata=metadata,
    )
