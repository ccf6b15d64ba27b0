"""Per-line checks of one JSONL record against the RFT chat format.

Each check returns a list of Problems instead of raising, so a single pass over
the file can report everything wrong at once.
"""

from __future__ import annotations

import re
from typing import Any

from rft_jax.data.chat_text import ACCEPTED_ROLES, ROLES, block_kind, role_of
from rft_jax.data.example import message_text
from rft_jax.data.json_input import JsonError, brief, parse_json
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
        return [Problem(line, f"{field}.role", f"unknown role {brief(message.get('role'))}",
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
    if message.get("tool_calls") is not None:
        if role != "assistant":
            return [Problem(line, f"{field}.tool_calls", f"a {role} message cannot carry tool_calls",
                            "move the calls to the assistant message that made them")]
        found = check_tool_calls(message["tool_calls"], field, line)
        if found:
            return found
    if role == "tool":
        call_id = message.get("tool_call_id")
        if call_id is not None and not isinstance(call_id, str):
            return [Problem(line, f"{field}.tool_call_id", f"must be a string, got {type(call_id).__name__}",
                            "use the id of the assistant's tool call this message answers")]
        return []  # a tool may return nothing
    if not message_text(message).strip() and not (role == "assistant" and message.get("tool_calls")):
        return [Problem(line, f"{field}.content", "empty content", "write the message text, or remove the message")]
    return []


CALL_FORM = '{"id": str, "type": "function", "function": {"name": str, "arguments": "<JSON object as a string>"}}'


def check_tool_calls(calls: Any, field: str, line: int) -> list[Problem]:
    """An assistant message's OpenAI `tool_calls`: a non-empty list of named function calls whose arguments
    are a JSON object (OpenAI's string form, or the object itself)."""
    if not isinstance(calls, list) or not calls:
        return [Problem(line, f"{field}.tool_calls", "must be a non-empty list of calls",
                        f"write [{CALL_FORM}], or drop tool_calls")]
    problems = []
    for j, call in enumerate(calls):
        where = f"{field}.tool_calls[{j}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"].strip():
            problems.append(Problem(line, where, "not a function call with a name", f"write {CALL_FORM}"))
            continue
        if call.get("type", "function") != "function" or not isinstance(call.get("id", ""), str):
            problems.append(Problem(line, where, 'type must be "function" and id a string', f"write {CALL_FORM}"))
            continue
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                args = parse_json(args) if args.strip() else {}
            except JsonError as err:
                problems.append(Problem(line, f"{where}.function.arguments", f"not valid JSON: {err}",
                                        "give the arguments as a JSON object, or that object's JSON string"))
                continue
        if not isinstance(args, dict):
            problems.append(Problem(line, f"{where}.function.arguments",
                                    f"must be a JSON object, got {type(args).__name__}",
                                    'give the arguments by name: {"x": 1}'))
    return problems


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
        elif role == "tool":
            problems += check_call_id(messages, i, line)
    if "user" not in roles:
        problems.append(Problem(line, "messages", "no user turn: a prompt ends with a user turn (or tool results)",
                                'add {"role": "user", "content": "..."}'))
    return problems


def check_call_id(messages: list[dict], i: int, line: int) -> list[Problem]:
    """A tool message's tool_call_id names one of the calls of the assistant message it answers."""
    call_id = messages[i].get("tool_call_id")
    j = i - 1
    while j >= 0 and messages[j].get("role") == "tool":
        j -= 1
    if j < 0 or not isinstance(messages[j].get("tool_calls"), list):
        return []  # no assistant call before the run of tool messages: check_role_order reports that
    ids = [c.get("id") for c in messages[j]["tool_calls"] if isinstance(c, dict) and c.get("id") is not None]
    if call_id is None or not ids or call_id in ids:
        return []
    return [Problem(line, f"messages[{i}].tool_call_id", f"{call_id!r} is not among messages[{j}]'s call ids "
                    f"({', '.join(map(str, ids))})", "use the id of the call this message answers")]


TOOL_FORM = '{"type": "function", "function": {"name": str, "description": str, "parameters": {JSON Schema}}}'
TOOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
"""A function name: a letter or underscore, then letters, digits, underscores or dashes; 64 characters at most
(OpenAI's limit, and a name every template and the model can write inside JSON)."""


def check_tools(tools: Any, line: int) -> list[Problem]:
    """OpenAI function schemas: type "function", a valid and unique name, `parameters` a JSON Schema object."""
    if not isinstance(tools, list):
        return [Problem(line, "tools", "must be a list of function schemas", f"write [{TOOL_FORM}, ...]")]
    problems: list[Problem] = []
    first: dict[str, int] = {}
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            problems.append(Problem(line, where, f"must be an object, got {type(tool).__name__}", f"write {TOOL_FORM}"))
            continue
        if tool.get("type") != "function":
            problems.append(Problem(line, f"{where}.type", f'must be "function", got {brief(tool.get("type"))}',
                                    f'add "type": "function" (only function tools are supported): {TOOL_FORM}'))
        fn = tool.get("function")
        if not isinstance(fn, dict):
            problems.append(Problem(line, f"{where}.function", "missing or not an object", f"write {TOOL_FORM}"))
            continue
        name = fn.get("name")
        if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
            problems.append(Problem(line, f"{where}.function.name", f"{brief(name)} is not a valid function name",
                                    "use a letter or underscore, then letters, digits, _ or -, "
                                    "64 characters at most (e.g. get_weather)"))
        elif name in first:
            problems.append(Problem(line, f"{where}.function.name",
                                    f"duplicate name {name!r} (also tools[{first[name]}])",
                                    "give every tool a unique name; the model calls tools by name"))
        else:
            first[name] = i
        if fn.get("description") is not None and not isinstance(fn["description"], str):
            problems.append(Problem(line, f"{where}.function.description", "must be a string",
                                    "describe what the tool does in a sentence"))
        if "parameters" in fn:
            problems += check_parameters(fn["parameters"], f"{where}.function.parameters", line)
    return problems


def check_parameters(schema: Any, field: str, line: int) -> list[Problem]:
    """A function's `parameters`: a valid JSON Schema (jsonschema's meta-schema check) describing an object."""
    if not isinstance(schema, dict):
        return [Problem(line, field, f"must be a JSON Schema object, got {type(schema).__name__}",
                        'write {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}')]
    if schema.get("type", "object") != "object":
        return [Problem(line, field, f'describes a {brief(schema["type"])}, but the arguments are an object',
                        'use "type": "object" with the arguments under "properties"')]
    if not isinstance(schema.get("$schema", ""), str):
        return [Problem(line, f"{field}.$schema", "must be a JSON Schema dialect URI (a string)",
                        'drop "$schema", or give e.g. "https://json-schema.org/draft/2020-12/schema"')]
    import jsonschema  # noqa: PLC0415 (lazy: only files with tools need it)

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except RecursionError:  # jsonschema recurses several frames per level of the schema
        return [Problem(line, field, "nested too deeply to check", "flatten the schema")]
    except jsonschema.SchemaError as err:
        at = "/".join(str(p) for p in err.absolute_path)
        return [Problem(line, f"{field}.{at.replace('/', '.')}" if at else field,
                        f"not a valid JSON Schema: {err.message[:200]}",  # it can quote the whole schema
                        "fix the schema (see https://json-schema.org/understanding-json-schema)")]
    return []
