"""The OpenAI chat-completions wire format: request validation, responses, chunks and error bodies.

Validation is strict where silently ignoring a field would change the answer
(logprobs, penalties, logit_bias, response_format, a forced tool_choice): those
get a 400 naming the parameter instead of a completion that quietly did not
honour them. Tool schemas and the tool turns of a conversation (assistant
`tool_calls` whose arguments are JSON objects, `tool` messages answering them)
are checked by data validation's rules (rft_jax/data/checks.py).
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any

from rft_jax.data.chat_text import ACCEPTED_ROLES, ROLES, block_kind, role_of
from rft_jax.data.checks import check_tool_calls, check_tools
from rft_jax.data.example import flatten_messages
from rft_jax.data.json_input import brief
from rft_jax.data.reasoning import EFFORT_BUDGETS

UNSUPPORTED = ("logprobs", "top_logprobs", "logit_bias", "response_format", "presence_penalty", "frequency_penalty",
               "audio", "prediction")
MAX_N = 16
MAX_STOPS = 4
MAX_TOKENS = 1 << 20
MAX_MESSAGES = 1024  # per request (`rft-jax serve --max-messages`); OpenAI's own limit is of this order
TOOL_CHOICES = ("auto", "none")  # "required" or a named function would need constrained decoding


class RequestError(ValueError):
    """A request we refuse; carries what the OpenAI error body needs."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None, status: int = 400,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.param, self.code, self.status, self.kind = param, code, status, kind


def error_body(message: str, *, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@dataclasses.dataclass(frozen=True)
class ChatRequest:
    messages: list[dict]
    max_tokens: int | None
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False
    seed: int | None = None
    tools: list | None = None  # validated function schemas; None when the request offers none
    tool_choice: str = "auto"  # "none": the tools are not offered and the answer is not read for calls
    parallel_tool_calls: bool = True  # False: only a turn's first call is returned
    max_reasoning_tokens: int | None = None  # reasoning mode's think budget for this request
    reasoning_effort: str | None = None  # or a level of EFFORT_BUDGETS; neither: the server's budget

    @property
    def offered_tools(self) -> list | None:
        """The tools the model is shown and its answer is read for: none under tool_choice "none"."""
        return self.tools if self.tool_choice != "none" else None


def _number(body: dict, name: str, default: float, lo: float, hi: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise RequestError(f"'{name}' must be a number from {lo} to {hi}; got {brief(value)}", param=name)
    return float(value)


def _integer(body: dict, name: str, lo: int, hi: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise RequestError(f"'{name}' must be an integer from {lo} to {hi}; got {brief(value)}", param=name)
    return value


def _messages(value: Any, max_messages: int) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise RequestError("'messages' must be a non-empty list", param="messages")
    if len(value) > max_messages:
        raise RequestError(f"'messages' has {len(value)} messages; this server takes at most {max_messages} "
                           "(shorten the conversation)", param="messages")
    for i, m in enumerate(value):
        if not isinstance(m, dict) or role_of(m) not in ROLES:
            raise RequestError(f"messages[{i}] needs a 'role' among {', '.join(ACCEPTED_ROLES)}",
                               param=f"messages[{i}].role")
        _content(m.get("content"), f"messages[{i}].content")
    _tool_turns(value)
    return flatten_messages(value)  # text parts joined (templates expect a string), "developer" as "system"


def _content(content: Any, where: str) -> None:
    """A string, null, or text parts: an image or audio part would be dropped silently, so it is refused."""
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise RequestError(f"{where} must be a string or a list of text parts, got {type(content).__name__}",
                           param=where)
    for j, part in enumerate(content):
        if block_kind(part) != "text":
            raise RequestError(f'{where}[{j}] is a {brief(block_kind(part))} part; this server reads text only: '
                               'send {"type": "text", "text": "..."}', param=f"{where}[{j}]")


def _tool_turns(messages: list[dict]) -> None:
    """Assistant `tool_calls` well formed (data validation's rules), each `tool` message answering one."""
    call_ids: set[str] = set()
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        calls = m.get("tool_calls")
        if calls:  # null or [] (some clients send it on every assistant turn): no calls
            if role_of(m) != "assistant":
                raise RequestError(f"{where}: a {role_of(m)} message cannot carry tool_calls",
                                   param=f"{where}.tool_calls")
            _refuse(check_tool_calls(calls, where, 0))
            call_ids.update(c.get("id") for c in calls)
        if role_of(m) == "tool":
            ref = m.get("tool_call_id")
            if not isinstance(ref, str) or ref not in call_ids:
                raise RequestError(f"{where} is a tool result: its 'tool_call_id' must name a call of an earlier "
                                   f"assistant message's 'tool_calls'; got {brief(ref)}", param=f"{where}.tool_call_id")


def _tools(value: Any) -> list[dict] | None:
    """The request's function schemas, checked as `rft-jax data validate` checks a dataset's: a template
    renders whatever it is given, so a malformed schema would reach the model as a confusing prompt."""
    if value is None or value == []:
        return None
    _refuse(check_tools(value, 0))
    return value


def _refuse(problems: list) -> None:
    """The first of data validation's problems as a 400 naming its field."""
    if problems:
        p = problems[0]
        raise RequestError(f"{p.field}: {p.problem} -> {p.fix}", param=p.field)


def _tool_choice(body: dict) -> str:
    choice = body.get("tool_choice")
    if choice is None:
        return "auto"
    if choice not in TOOL_CHOICES:
        raise RequestError(f"'tool_choice' must be \"auto\" or \"none\" on this server (it cannot force a call: "
                           f"that needs constrained decoding); got {brief(choice)}", param="tool_choice",
                           code="unsupported_parameter")
    return choice


def _stops(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = (value,) if isinstance(value, str) else value
    if not isinstance(stops, (list, tuple)) or len(stops) > MAX_STOPS or not all(isinstance(s, str) for s in stops):
        raise RequestError(f"'stop' must be a string or a list of at most {MAX_STOPS} strings", param="stop")
    return tuple(s for s in stops if s)


def _reasoning(body: dict) -> tuple[int | None, str | None]:
    """max_reasoning_tokens and reasoning_effort, checked; both at once are refused rather than ranked."""
    tokens = _integer(body, "max_reasoning_tokens", 0, MAX_TOKENS)
    effort = body.get("reasoning_effort")
    if effort is not None and not (isinstance(effort, str) and effort in EFFORT_BUDGETS):
        raise RequestError(f"'reasoning_effort' must be one of {', '.join(map(repr, EFFORT_BUDGETS))}; got {brief(effort)}",
                           param="reasoning_effort")
    if tokens is not None and effort is not None:
        raise RequestError("give 'max_reasoning_tokens' or 'reasoning_effort', not both", param="reasoning_effort")
    return tokens, effort


def parse_chat_request(body: Any, served_model: str, *, max_messages: int = MAX_MESSAGES) -> ChatRequest:
    """A validated request, or a RequestError naming the offending parameter."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str):
        raise RequestError("'model' is required" if model is None else "'model' must be a string", param="model")
    if model != served_model:
        raise RequestError(f"model {brief(model)} does not exist; this server serves {served_model!r}", param="model",
                           code="model_not_found", status=404)
    for name in UNSUPPORTED:
        if body.get(name) not in (None, False, 0, 0.0):
            raise RequestError(f"'{name}' is not supported by this server", param=name, code="unsupported_parameter")
    for name in ("functions", "function_call"):  # OpenAI's deprecated form of tools
        if body.get(name) is not None:
            raise RequestError(f"'{name}' is not supported by this server: send 'tools' (and 'tool_choice')",
                               param=name, code="unsupported_parameter")
    max_tokens = _integer(body, "max_completion_tokens", 1, MAX_TOKENS)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", 1, MAX_TOKENS)
    max_reasoning_tokens, reasoning_effort = _reasoning(body)
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise RequestError("'stream' must be a boolean", param="stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise RequestError("'stream_options' must be an object", param="stream_options")
    tools = _tools(body.get("tools"))
    parallel = body.get("parallel_tool_calls")
    parallel = True if parallel is None else parallel
    if not isinstance(parallel, bool):
        raise RequestError("'parallel_tool_calls' must be a boolean", param="parallel_tool_calls")
    return ChatRequest(
        messages=_messages(body.get("messages"), max_messages),
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0) or 1e-6,  # top_p 0 means "only the top token"
        n=_integer(body, "n", 1, MAX_N) or 1,
        stop=_stops(body.get("stop")),
        stream=stream,
        include_usage=bool(options.get("include_usage")),
        seed=_integer(body, "seed", -(1 << 63), (1 << 63) - 1),
        tools=tools,
        tool_choice=_tool_choice(body),
        parallel_tool_calls=parallel,
        max_reasoning_tokens=max_reasoning_tokens,
        reasoning_effort=reasoning_effort,
    )


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int, reasoning_tokens: int | None = None) -> dict:
    """Token counts; with reasoning on, the thinking tokens among the completion's (OpenAI's field)."""
    out = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
           "total_tokens": prompt_tokens + completion_tokens}
    if reasoning_tokens is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    return out


def message(text: str | None, reasoning: str | None, tool_calls: list[dict] | None = None) -> dict:
    """The assistant turn; `reasoning_content` beside `content` only in reasoning mode (vLLM's field), and
    `tool_calls` (content then null when no text surrounds them) when the answer called tools."""
    out = {"role": "assistant", "content": text}
    if reasoning is not None:
        out["reasoning_content"] = reasoning
    if tool_calls:
        out["tool_calls"] = tool_calls
    return out


def chat_completion(cid: str, model: str, texts: list[str | None], finish_reasons: list[str], usage_: dict,
                    reasonings: list[str] | None = None, tool_calls: list[list[dict]] | None = None) -> dict:
    """The response; `reasonings` (reasoning mode) are the choices' thinking, `texts` their answers and
    `tool_calls` the calls read from them."""
    reasonings = reasonings or [None] * len(texts)
    tool_calls = tool_calls or [[]] * len(texts)
    choices = [{"index": i, "message": message(text, thinking, calls), "finish_reason": reason, "logprobs": None}
               for i, (text, thinking, calls, reason)
               in enumerate(zip(texts, reasonings, tool_calls, finish_reasons))]
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": usage_}


def chunk(cid: str, model: str, index: int, delta: dict, finish_reason: str | None = None) -> dict:
    return {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}


def usage_chunk(cid: str, model: str, usage_: dict) -> dict:
    return {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [], "usage": usage_}


def models_list(model: str, created: int) -> dict:
    return {"object": "list", "data": [{"id": model, "object": "model", "created": created, "owned_by": "rft_jax"}]}
