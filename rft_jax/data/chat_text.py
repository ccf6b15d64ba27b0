"""Provider chat messages -> RFT chat turns whose content is a plain string.

Logs and tables hold messages in several shapes: OpenAI (`content` a string or a list of
`{"type": "text", "text": ...}` parts), Anthropic (`{"type": "text", "text": ...}` blocks) and
Bedrock Converse / Nova (`{"text": ...}` blocks). Text blocks are joined; anything else (images,
documents, tool use inside a kept turn) makes the record unusable, with the reason, rather than
silently dropping part of what the model was shown.
"""

from __future__ import annotations

from typing import Any

ROLES = ("system", "user", "assistant", "tool")
"""The roles of an RFT turn; every reader of messages (validation, conversion, serving, graders) checks these."""
ROLE_ALIASES = {"developer": "system"}  # OpenAI's newer name for the system turn (its RFT rows use it)
ACCEPTED_ROLES = (*ROLES, *ROLE_ALIASES)
TEXT_BLOCKS = ("text", "input_text", "output_text")  # chat parts; the Responses API's input and output parts
IGNORED_BLOCKS = ("cachePoint",)  # Bedrock prompt-cache markers: carry no text
TOOL_RESULT_BLOCKS = ("toolResult", "tool_result")
OPENAI_TURN_FIELDS = ("tool_calls", "tool_call_id", "name")  # already valid in RFT JSONL, kept as they are


class UnusableRecord(ValueError):
    """A record that cannot become a training example; the message says why, for the skip report."""


def role_of(message: dict) -> Any:
    """The message's role with aliases resolved: "developer" reads as "system"."""
    role = message.get("role")
    return ROLE_ALIASES.get(role, role) if isinstance(role, str) else role


def block_kind(block: Any) -> str:
    """'text' for a text part in any of its shapes, else the block's type or first key. A plain string
    in a content list is text too, as in OpenAI's grader inputs."""
    if isinstance(block, str):
        return "text"
    if not isinstance(block, dict):
        return type(block).__name__
    kind = block.get("type") or next(iter(block), "empty")
    if kind in TEXT_BLOCKS and not isinstance(block.get("text"), str):
        return f"{kind} without a string 'text'"  # not "text": readers would index block["text"]
    return "text" if kind in TEXT_BLOCKS else kind


def flatten_content(content: Any, where: str = "content", sep: str = "", *, strict: bool = True) -> str:
    """The text of a message's content, its text blocks joined with `sep` (as a chat template
    joins a message's text parts). The one place content parts become a string: conversion and the
    OpenAI graders' checks (`strict`, a non-text block raises UnusableRecord) and, through
    `example.message_text`, everything that hands messages to a chat template, a reward or a judge
    (non-text blocks skipped; validation refuses them first, with `block_kind`)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    blocks = [content] if isinstance(content, dict) else content
    if not isinstance(blocks, list):
        if not strict:
            return ""
        raise UnusableRecord(f"{where}: content is a {type(content).__name__}, not text")
    texts = []
    for block in blocks:
        kind = block_kind(block)
        if kind == "text":
            texts.append(block if isinstance(block, str) else block["text"])
        elif strict and kind not in IGNORED_BLOCKS:
            raise UnusableRecord(f"{where} holds a {kind!r} block, not text")
    return sep.join(texts)


def is_user_turn(message: Any) -> bool:
    """A user message the person wrote, not a Bedrock/Anthropic user turn carrying only tool results."""
    if not isinstance(message, dict) or message.get("role") != "user":
        return False
    content = message.get("content")
    return not (isinstance(content, list) and content
                and all(block_kind(block) in TOOL_RESULT_BLOCKS for block in content))


def flatten_message(message: Any, where: str) -> dict:
    if not isinstance(message, dict):
        raise UnusableRecord(f"{where} is not a message object")
    role = role_of(message)
    if role not in ROLES:
        raise UnusableRecord(f"{where}: unknown role {message.get('role')!r}")
    turn = {"role": role, "content": flatten_content(message.get("content"), where)}
    turn.update({k: message[k] for k in OPENAI_TURN_FIELDS if message.get(k) is not None})
    return turn


def prompt_turns(messages: Any, *, system: str = "") -> list[dict]:
    """The conversation up to the last user turn, as RFT turns; `system` (from a separate
    request field, as Bedrock and Anthropic keep it) goes first. A trailing tool-result turn
    is left out, so each step of an agent loop reduces to the prompt that started it."""
    if not isinstance(messages, list):
        raise UnusableRecord("the request has no messages list")
    last_user = max((i for i, m in enumerate(messages) if is_user_turn(m)), default=-1)
    if last_user < 0:
        raise UnusableRecord("the request has no user turn")
    turns = [{"role": "system", "content": system}] if system.strip() else []
    turns += [flatten_message(m, f"messages[{i}]") for i, m in enumerate(messages[: last_user + 1])]
    if not turns[-1]["content"].strip():
        raise UnusableRecord(f"messages[{last_user}]: the last user turn is empty")
    return turns
