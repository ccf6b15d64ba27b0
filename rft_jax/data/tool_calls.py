"""A model's tool calls, read from its text in its chat template's own format, as OpenAI `tool_calls`.

Two formats cover the templates in use (docs/tools.md):

- hermes (Hermes, Qwen2.5/3, and the fallback for templates with no tool format):
  `<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>`, any number per turn,
  with text around them; `arguments` may also be a JSON string holding the object.
- llama3 (Llama 3.1-3.3): the whole message is the call, `{"name": "add", "parameters": {"a": 1}}`,
  optionally after `<|python_tag|>`; several calls are separated by `;`.

A malformed call never raises: it becomes an entry of `ParsedTurn.errors`, a sentence saying what was
wrong and the form expected, which the environment hands back to the model as a tool error.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal

ToolFormat = Literal["hermes", "llama3"]

OPEN_TAG, CLOSE_TAG = "<tool_call>", "</tool_call>"
PYTHON_TAG = "<|python_tag|>"
HERMES_FORM = '<tool_call>{"name": "<tool name>", "arguments": {<arguments as a JSON object>}}</tool_call>'
LLAMA3_FORM = '{"name": "<tool name>", "parameters": {<arguments as a JSON object>}} (calls separated by ";")'


@dataclasses.dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict  # the parsed JSON object
    id: str  # "call_<k>" (k: the call's index in the turn) unless the model gave one

    def to_openai(self) -> dict:
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)}}


@dataclasses.dataclass(frozen=True)
class ParsedTurn:
    content: str  # the text outside tool-call markup, stripped
    calls: tuple[ToolCall, ...] = ()
    errors: tuple[str, ...] = ()  # one per malformed call: a sentence the model reads as a tool error

    def to_message(self) -> dict:
        """The turn as an OpenAI assistant message (`tool_calls` only when there are calls)."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.calls:
            message["tool_calls"] = [c.to_openai() for c in self.calls]
        return message


def parse_tool_calls(text: str, fmt: ToolFormat = "hermes") -> ParsedTurn:
    """The calls in one model turn; never raises."""
    if fmt == "llama3":
        return _parse_llama3(text)
    return _parse_hermes(text)


def tool_format(tokenizer) -> ToolFormat:
    """llama3 for a Llama-3-style chat template (it writes `<|python_tag|>` or an `ipython` turn), else hermes."""
    template = getattr(getattr(tokenizer, "hf", None), "chat_template", None)
    text = json.dumps(template) if isinstance(template, dict) else str(template or "")
    return "llama3" if PYTHON_TAG in text or "ipython" in text else "hermes"


def call_opening(fmt: ToolFormat) -> str:
    """What starts a call in the model's text, for a streaming server to hold text back from.

    hermes: the opening tag, which may come anywhere in the turn. llama3: "{", and only at the start of the
    reply (after whitespace and `<|python_tag|>`), since there the calls are the whole message.
    """
    return "{" if fmt == "llama3" else OPEN_TAG


def hermes_call_text(name: str, arguments: dict | str) -> str:
    """One call as the hermes format writes it (arguments given as an object or its JSON string)."""
    args = _arguments_object(arguments)
    body = {"name": name, "arguments": args if isinstance(args, dict) else arguments}
    return f"{OPEN_TAG}\n{json.dumps(body, ensure_ascii=False)}\n{CLOSE_TAG}"


def _parse_hermes(text: str) -> ParsedTurn:
    outside, calls, errors = [], [], []
    rest, k = text, 0
    while True:
        start = rest.find(OPEN_TAG)
        stray = rest.find(CLOSE_TAG)
        if 0 <= stray and (start < 0 or stray < start):
            outside.append(rest[:stray])
            errors.append(f"Tool call {k + 1}: found {CLOSE_TAG} without an opening {OPEN_TAG}. "
                          f"Write each call as {HERMES_FORM}.")
            k += 1
            rest = rest[stray + len(CLOSE_TAG):]
            continue
        if start < 0:
            outside.append(rest)
            break
        outside.append(rest[:start])
        body_start = start + len(OPEN_TAG)
        end = rest.find(CLOSE_TAG, body_start)
        if end < 0:
            errors.append(f"Tool call {k + 1}: {OPEN_TAG} was never closed with {CLOSE_TAG}. "
                          f"Write each call as {HERMES_FORM}.")
            break
        call, error = _read_call(rest[body_start:end], k, ("arguments", "parameters"), HERMES_FORM, len(calls))
        calls += [call] if call else []
        errors += [error] if error else []
        k += 1
        rest = rest[end + len(CLOSE_TAG):]
    return ParsedTurn("".join(outside).strip(), tuple(calls), tuple(errors))


def _parse_llama3(text: str) -> ParsedTurn:
    body = text.strip()
    tagged = body.startswith(PYTHON_TAG)
    if tagged:
        body = body[len(PYTHON_TAG):].strip()
    if not (tagged or _looks_like_llama3_call(body)):
        return ParsedTurn(text.strip())
    decoder = json.JSONDecoder()
    calls, errors, pos, k = [], [], 0, 0
    while pos < len(body):
        try:
            value, end = decoder.raw_decode(body, pos)
        except json.JSONDecodeError as err:
            errors.append(f"Tool call {k + 1} is not valid JSON ({err.msg} at character {err.pos}). "
                          f"Write the whole message as {LLAMA3_FORM}.")
            break
        call, error = _check_call(value, k, ("parameters", "arguments"), LLAMA3_FORM, len(calls))
        calls += [call] if call else []
        errors += [error] if error else []
        k += 1
        pos = _skip_space(body, end)
        if pos < len(body):
            if body[pos] != ";":
                errors.append(f"Unexpected text after tool call {k}: {body[pos:pos + 40]!r}. "
                              f"Write the whole message as {LLAMA3_FORM}.")
                break
            pos = _skip_space(body, pos + 1)
    return ParsedTurn("", tuple(calls), tuple(errors))


def _looks_like_llama3_call(body: str) -> bool:
    """An untagged message is a call when it is JSON naming a tool, or JSON that fails but mentions "name"."""
    if not body.startswith("{"):
        return False
    try:
        value, _ = json.JSONDecoder().raw_decode(body)
    except json.JSONDecodeError:
        return '"name"' in body
    return isinstance(value, dict) and ("name" in value or "parameters" in value)


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _read_call(body: str, k: int, keys: tuple[str, ...], form: str, index: int
               ) -> tuple[ToolCall | None, str | None]:
    try:
        value = json.loads(body)
    except json.JSONDecodeError as err:
        return None, f"Tool call {k + 1} is not valid JSON ({err.msg} at character {err.pos}). Write each call as {form}."
    return _check_call(value, k, keys, form, index)


def _check_call(value: Any, k: int, keys: tuple[str, ...], form: str, index: int
                ) -> tuple[ToolCall | None, str | None]:
    """A decoded call object checked: a string `name` and an object of arguments under one of `keys`."""
    where = f"Tool call {k + 1}"
    if not isinstance(value, dict):
        return None, f"{where} is a JSON {type(value).__name__}, not an object. Write each call as {form}."
    name = value.get("name")
    if not isinstance(name, str) or not name.strip():
        return None, f'{where} has no "name" naming the tool. Write each call as {form}.'
    key = next((key for key in keys if key in value), None)
    args = _arguments_object(value[key]) if key else {}
    if not isinstance(args, dict):
        return None, (f'{where} ({name}): "{key or keys[0]}" must be a JSON object of argument names and values. '
                      f"Write each call as {form}.")
    given = value.get("id")
    call_id = given if isinstance(given, str) and given else f"call_{index}"
    return ToolCall(name.strip(), args, call_id), None


def _arguments_object(value: Any) -> Any:
    """Arguments given as a JSON string are decoded (OpenAI's own wire form); anything else is returned as is."""
    if isinstance(value, str):
        try:
            return json.loads(value) if value.strip() else {}
        except json.JSONDecodeError:
            return value
    return {} if value is None else value
