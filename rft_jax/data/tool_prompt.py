"""Tools in the prompt: the chat template's own rendering, or a documented fallback when it has none.

A template that renders `tools` (Qwen, Llama 3.1+, Hermes) gets them as they are. A template that
ignores them, as the default model's (SmolLM2) does, would drop them without a word; for those the
tools are described in the system turn by `tool_system_text` and the model calls them with Hermes
tags, `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (docs/tools.md). Whether a template
renders tools is found by rendering a sentinel tool and looking for its name.

`tool_turn_text` is the text the template writes for tool results between two assistant turns; a
multi-turn rollout tokenizes it and decodes on after it, on the same KV cache.
"""

from __future__ import annotations

import json
from typing import Any

from rft_jax.data.tool_calls import hermes_call_text

SENTINEL_TOOL = "rft_jax_sentinel_tool_4c1e"
_SENTINEL_TOOLS = [{"type": "function", "function": {
    "name": SENTINEL_TOOL, "description": "Detects whether the chat template renders tools.",
    "parameters": {"type": "object", "properties": {}}}}]
_SENTINEL_SYSTEM = "rft_jax_sentinel_system_9b27"

TOOL_INSTRUCTION = (
    "You can call functions to help with the request. They are described as JSON schemas inside "
    "<tools></tools>:\n<tools>\n{tools}\n</tools>\n\n"
    "To call a function, write one JSON object with its name and arguments inside <tool_call></tool_call> "
    "tags, one block per call, for example:\n"
    "<tool_call>\n{example}\n</tool_call>\n"
    "The results come back in tool turns. When you have what you need, answer without a tool call.")
"""The fallback system text; `{tools}` is one JSON schema per line, `{example}` a call of the first tool
(`example_call`). Documented in docs/tools.md."""

_cache: dict[tuple[str, str], Any] = {}  # (probe, chat template) -> answer


def tool_system_text(tools: list[dict]) -> str:
    """The documented fallback instruction describing `tools` (Hermes tags)."""
    return TOOL_INSTRUCTION.format(tools="\n".join(json.dumps(t, ensure_ascii=False) for t in tools),
                                   example=example_call(tools))


def example_call(tools: list[dict]) -> str:
    """A call of the first tool, with its real name and parameter names ("..." for each value). A concrete
    call rather than placeholders: small models copied a placeholder such as "<function name>" literally,
    or wrote the question where the tool's name belongs."""
    function = (tools[0].get("function") or {}) if tools and isinstance(tools[0], dict) else {}
    params = function.get("parameters") if isinstance(function.get("parameters"), dict) else {}
    names = params.get("required") or list((params.get("properties") or {}).keys())
    arguments = {str(n): "..." for n in names if isinstance(n, str)}
    return json.dumps({"name": function.get("name", "tool_name"), "arguments": arguments}, ensure_ascii=False)


def template_renders_tools(tokenizer) -> bool:
    """The chat template puts `tools` into the prompt: a sentinel tool's name appears in its rendering."""
    def probe() -> bool:
        text = _render(tokenizer, [{"role": "user", "content": "hi"}], _SENTINEL_TOOLS)
        return text is None or SENTINEL_TOOL in text  # a tokenizer that cannot show its text is trusted
    return _cached(tokenizer, "tools", probe)


def _renders_system(tokenizer) -> bool:
    """The template keeps a system turn's text (where the fallback puts the tools)."""
    def probe() -> bool:
        text = _render(tokenizer, [{"role": "system", "content": _SENTINEL_SYSTEM},
                                   {"role": "user", "content": "hi"}], None)
        return text is None or _SENTINEL_SYSTEM in text
    return _cached(tokenizer, "system", probe)


def template_default_system(tokenizer) -> str | None:
    """The system prompt the template writes when the conversation has none (SmolLM2's "You are a helpful AI
    assistant named SmolLM, ..."), or None. The fallback keeps it after the tool description, so adding
    tools does not take away the system prompt the model was tuned with."""
    def probe() -> str | None:
        user = [{"role": "user", "content": "hi"}]
        plain = _render(tokenizer, user, None)
        marked = _render(tokenizer, [{"role": "system", "content": _SENTINEL_SYSTEM}] + user, None)
        if plain is None or marked is None or _SENTINEL_SYSTEM not in marked:
            return None
        pre, _, post = marked.partition(_SENTINEL_SYSTEM)
        if not (plain.startswith(pre) and plain.endswith(post) and len(plain) > len(pre) + len(post)):
            return None
        return plain[len(pre):len(plain) - len(post)]
    return _cached(tokenizer, "default_system", probe)


def messages_with_tools(tokenizer, messages: list[dict], tools: list | None) -> tuple[list[dict], list | None]:
    """What to hand the chat template so that the tools and any tool turns reach the prompt.

    A template that renders tools gets (messages, tools), with each assistant call's `arguments` as an
    object (what templates expect; OpenAI sends a JSON string). Any other gets the fallback: the tools
    described in front of the system turn (the template's default system prompt when there is none), assistant `tool_calls` written into the content as
    `<tool_call>` blocks, tool-role messages kept, and no `tools`. Raises ValueError when even the
    fallback cannot reach the prompt; tools are never dropped silently.
    """
    has_calls = any(m.get("tool_calls") for m in messages)
    if not tools and not has_calls:
        return messages, tools
    if template_renders_tools(tokenizer):
        return [_native_turn(m) for m in messages], tools
    out = [_fallback_turn(m) for m in messages]
    if not tools:
        return out, None
    if not _renders_system(tokenizer):
        raise ValueError("this model's chat template renders neither `tools` nor a system turn, so the tools "
                         "would not reach the prompt: use a model whose template renders one of them, or put "
                         "the tool descriptions into the user turn yourself and drop `tools`")
    text = tool_system_text(tools)
    if out and out[0].get("role") == "system" and isinstance(out[0].get("content"), str):
        return [{**out[0], "content": f"{text}\n\n{out[0]['content']}"}] + out[1:], None
    default = template_default_system(tokenizer)
    return [{"role": "system", "content": f"{text}\n\n{default}" if default else text}] + out, None


def _native_turn(message: dict) -> dict:
    calls = message.get("tool_calls")
    if not calls:
        return message
    return {**message, "tool_calls": [_with_object_arguments(c) for c in calls]}


def _with_object_arguments(call: dict) -> dict:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("arguments"), str):
        return call
    try:
        args = json.loads(fn["arguments"])
    except json.JSONDecodeError:
        return call
    return {**call, "function": {**fn, "arguments": args}} if isinstance(args, dict) else call


def _fallback_turn(message: dict) -> dict:
    """Content never None; an assistant's calls written as Hermes blocks after its text."""
    turn = {k: v for k, v in message.items() if k != "tool_calls"}
    content = message.get("content")
    text = content if isinstance(content, str) else ("" if content is None else content)
    calls = message.get("tool_calls") or []
    if calls and isinstance(text, str):
        blocks = [hermes_call_text(*_name_and_arguments(c)) for c in calls]
        text = "\n".join(([text] if text.strip() else []) + blocks)
    turn["content"] = text
    return turn


def _name_and_arguments(call: Any) -> tuple[str, Any]:
    fn = call.get("function", call) if isinstance(call, dict) else {}
    return str(fn.get("name", "")), fn.get("arguments", {})


def tool_turn_text(tokenizer, tool_messages: list[dict], tools: list | None = None, **template_kwargs) -> str:
    """The text the chat template writes after an assistant turn's end-of-turn token, through the next
    assistant header, for these tool-role messages (SmolLM2: "\\n<|im_start|>tool\\n42<|im_end|>\\n
    <|im_start|>assistant\\n").

    Found by rendering a placeholder exchange (a user turn, an assistant turn calling one tool per
    message) with and without the tool messages: the full rendering, after the first end-of-turn token
    that follows the part both share. The rollout tokenizes it and decodes on after it.
    """
    user = {"role": "user", "content": "x"}
    calls = [{"id": m.get("tool_call_id") or f"call_{k}", "type": "function",
              "function": {"name": m.get("name") or "tool", "arguments": {}}} for k, m in enumerate(tool_messages)]
    assistant = {"role": "assistant", "content": "", "tool_calls": calls}
    head = _render_with_tools(tokenizer, [user], tools, **template_kwargs)
    full = _render_with_tools(tokenizer, [user, assistant, *tool_messages], tools, **template_kwargs)
    if head is None or full is None:
        raise ValueError("tool_turn_text needs a tokenizer that renders its chat template as text (render_chat)")
    start = 0
    while start < min(len(head), len(full)) and head[start] == full[start]:
        start += 1
    ends = [(full.find(s, start), s) for s in _end_of_turn_strings(tokenizer)]
    found = [(i, s) for i, s in ends if i >= 0]
    if not found:
        raise ValueError("could not find the assistant's end-of-turn token in the chat template's rendering of a "
                         "tool exchange: the tokenizer's eos tokens never appear in it")
    i, s = min(found)
    return full[i + len(s):]


def _render_with_tools(tokenizer, messages: list[dict], tools: list | None, **template_kwargs) -> str | None:
    shown, kept = messages_with_tools(tokenizer, messages, tools)
    return _render(tokenizer, shown, kept, **template_kwargs)


def _end_of_turn_strings(tokenizer) -> list[str]:
    out = []
    for i in getattr(tokenizer, "eos_ids", ()):
        text = tokenizer.decode([i], skip_special_tokens=False)
        if text:
            out.append(text)
    return out


def _render(tokenizer, messages: list[dict], tools: list | None, **template_kwargs) -> str | None:
    """The template's text for these messages (with the generation prompt); None when the tokenizer cannot
    show it (a test double with ids only)."""
    if hasattr(tokenizer, "render_chat"):
        return tokenizer.render_chat(messages, tools, True, **template_kwargs)
    return None


def _cached(tokenizer, probe_name: str, probe) -> Any:
    template = getattr(getattr(tokenizer, "hf", None), "chat_template", None)
    if not isinstance(template, str):
        return probe()
    key = (probe_name, template)
    if key not in _cache:
        _cache[key] = probe()
    return _cache[key]
