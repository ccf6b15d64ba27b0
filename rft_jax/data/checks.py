"""Per-line checks of one JSONL record against the RFT chat format.

Each check returns a list of Problems instead of raising, so a single pass over
the file can report everything wrong at once.
"""

from __future__ import annotations

from typing import Any

from rft_jax.data.chat_text import ACCEPTED_ROLES, ROLES, block_kind, role_of
from rft_jax.data.example import message_text
from rft_jax.data.problems import Problem


def check_record(record: Any, line: int, *, require_reference: bool) -> list[Problem]:
    if not isinstance(record, dict):
        return [Problem(line, "(line)", f"expected a JSON object, got {type(record).__name__}",
                        'write one object per line: {"messages": [...], "reference_answer": ...}')]
    problems = check_messages(record.get("messages"), line)
    if require_reference and record.get("reference_answer") is None:
        problems.append(Problem(line, "reference_answer", "missing, and the chosen reward needs one",
                                'add "reference_answer": <the correct answer>'))
    if "id" in record and not isinstance(record["id"], (str, int)):
        problems.append(Problem(line, "id", f"must be a string or integer, got {type(record['id']).__name__}",
                                "use a unique string id, or drop the field to have one generated"))
    if record.get("tools") is not None:
        problems += check_tools(record["tools"], line)
    return problems


def check_messages(messages: Any, line: int) -> list[Problem]:
    if messages is None:
        return [Problem(line, "messages", "missing", 'add "messages": [{"role": "user", "content": "..."}]')]
    if not isinstance(messages, list) or not messages:
        return [Problem(line, "messages", "must be a non-empty list of message objects",
                        'use "messages": [{"role": "user", "content": "..."}]')]
    problems: list[Problem] = []
    for i, message in enumerate(messages):
        problems += check_message(message, i, line)
    if problems:
        return problems
    return check_role_order([role_of(m) for m in messages], messages, line)


def check_message(message: Any, index: int, line: int) -> list[Problem]:
    field = f"messages[{index}]"
    if not isinstance(message, dict):
        return [Problem(line, field, "must be an object with role and content",
                        '{"role": "user", "content": "..."}')]
    role = role_of(message)
    if role not in ROLES:
        return [Problem(line, f"{field}.role", f"unknown role {message.get('role')!r}",
                        f"use one of {', '.join(ACCEPTED_ROLES)}")]
    content = message.get("content")
    if isinstance(content, list):
        for j, part in enumerate(content):
            if block_kind(part) != "text":  # the definition flattening uses, so what validates renders
                return [Problem(line, f"{field}.content[{j}]",
                                f'a {block_kind(part)!r} part; content parts must be text: {{"type": "text", '
                                '"text": str} or {"text": str}',
                                "convert the part to a text part, or use a plain string content")]
    elif content is not None and not isinstance(content, str):
        return [Problem(line, f"{field}.content",
                        f"must be a string or a list of text parts, got {type(content).__name__}",
                        "use a string")]
    if not message_text(message).strip() and not (role == "assistant" and message.get("tool_calls")):
        return [Problem(line, f"{field}.content", "empty content", "write the message text, or remove the message")]
    return []


def check_role_order(roles: list[str], messages: list[dict], line: int) -> list[Problem]:
    problems = []
    for i, role in enumerate(roles):
        prev = roles[i - 1] if i else None
        if role == "system" and i != 0:
            problems.append(Problem(line, f"messages[{i}].role", "system message after the first turn",
                                    "move the system message to the start, or make it a user turn"))
        elif role == "assistant" and prev in (None, "system"):
            problems.append(Problem(line, f"messages[{i}].role", "assistant turn before any user turn",
                                    "start the conversation with a user turn"))
        elif role == "tool" and not (prev == "tool" or (prev == "assistant" and messages[i - 1].get("tool_calls"))):
            problems.append(Problem(line, f"messages[{i}].role", "tool message not answering an assistant tool call",
                                    "put tool messages right after the assistant message with tool_calls"))
    if "user" not in roles:
        problems.append(Problem(line, "messages", "no user turn: the prompt must end with a user turn",
                                'add {"role": "user", "content": "..."}'))
    return problems


def check_tools(tools: Any, line: int) -> list[Problem]:
    if not isinstance(tools, list):
        return [Problem(line, "tools", "must be a list of function schemas",
                        '[{"type": "function", "function": {"name": ..., "parameters": {...}}}]')]
    problems = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not (isinstance(tool, dict) and tool.get("type") == "function" and isinstance(fn, dict)
                and isinstance(fn.get("name"), str) and isinstance(fn.get("parameters", {}), dict)):
            problems.append(Problem(line, f"tools[{i}]", "not an OpenAI function schema",
                                    '{"type": "function", "function": {"name": str, "parameters": {JSON schema}}}'))
    return problems
