"""The environment protocol and the tool-table base class the built-in environments share.

An episode is reset(example), then step(turn) after each policy turn that holds tool
calls (or malformed calls), until the policy gives a final answer, the environment
says done, or the rollout's turn/token budget runs out. Containment is the rule:
an unknown tool, bad arguments, an exception or a timeout in a tool becomes a
tool-role error message the model reads on its next turn and a count in
`StepResult.errors`; nothing raises out of `step`.

Timeouts of in-process tools: each call runs in a daemon worker thread and the step
waits at most `timeout_s` for it. Python cannot kill a thread, so a call that hangs is
abandoned, not stopped: it keeps its thread (and whatever it holds) until it returns
on its own. Tools that may hang for good should enforce their own deadline (the
SQLite tool interrupts its query; the Python tool runs in a sandboxed process that is
killed) or run out of process (the remote environment).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from rft_jax.data.example import Example
from rft_jax.data.tool_calls import ParsedTurn, ToolCall

MAX_OUTPUT_CHARS = 2000


@dataclasses.dataclass(frozen=True)
class StepResult:
    messages: list[dict]  # tool-role messages {"role": "tool", "tool_call_id", "name", "content"}, in call order
    reward: float = 0.0  # per-turn shaping reward (0 for the built-ins)
    done: bool = False  # the environment ended the episode
    errors: int = 0  # calls that failed: malformed, unknown tool, bad arguments, exception, timeout
    seconds: float = 0.0  # wall time spent in the environment


@runtime_checkable
class Environment(Protocol):
    """What the rollout drives: one instance per episode (see `make_environment`)."""

    tools: list[dict]  # OpenAI tool schemas it offers (used when an example has no `tools`)

    def reset(self, example: Example) -> list[dict]:
        """Start the episode; returns messages appended before the first policy turn (often [])."""
        ...

    def step(self, turn: ParsedTurn) -> StepResult:
        """Answer a policy turn that has tool calls or malformed calls. Never raises."""
        ...

    def close(self) -> None: ...


class ToolError(Exception):
    """Raised by a tool to report a failure whose message the model should read as is ("Error: <message>")."""


def tool_message(call_id: str, name: str, content: str) -> dict:
    return {"role": "tool", "tool_call_id": call_id, "name": name, "content": content}


def error_messages(errors: tuple[str, ...] | list[str], limit: int = MAX_OUTPUT_CHARS) -> list[dict]:
    """Tool messages answering malformed calls (ParsedTurn.errors): they have no id or name of their own."""
    return [tool_message(f"invalid_call_{k}", "invalid_tool_call", truncate(as_error(text), limit))
            for k, text in enumerate(errors)]


def as_error(text: str) -> str:
    return text if text.startswith("Error") else f"Error: {text}"


def truncate(text: str, limit: int = MAX_OUTPUT_CHARS) -> str:
    """At most `limit` characters of `text`, then a note saying how much was cut (so the reply stays bounded)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n... [output truncated: {len(text) - limit} more characters]"


def function_schema(name: str, description: str, parameters: dict[str, tuple[str, str]]) -> dict:
    """An OpenAI tool schema for a function whose parameters, {name: (JSON type, description)}, are all required."""
    properties = {arg: {"type": kind, "description": text} for arg, (kind, text) in parameters.items()}
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": properties, "required": list(parameters)}}}


def render_output(value: object) -> str:
    """A tool's return value as the text the model reads: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


class ToolTimeout(Exception):
    pass


def call_in_thread(fn: Callable[..., object], kwargs: dict, timeout_s: float) -> object:
    """fn(**kwargs) in a daemon thread; raises ToolTimeout after `timeout_s` (the thread is abandoned, see above)."""
    box: dict[str, object] = {}
    finished = threading.Event()

    def target() -> None:
        try:
            box["value"] = fn(**kwargs)
        except BaseException as err:  # noqa: B036 (a tool's SystemExit must not end the thread silently)
            box["error"] = err
        finally:
            finished.set()

    threading.Thread(target=target, name=f"tool-{getattr(fn, '__name__', 'call')}", daemon=True).start()
    if not finished.wait(timeout_s):
        raise ToolTimeout
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]


class ToolEnvironment:
    """An environment that is a table of tools: name -> Python function, with their OpenAI schemas.

    `step` answers each call in order with one tool message and each malformed call with an error message.
    Subclasses set up per-episode state in `reset` and may override `invoke` (how one function is run).
    """

    def __init__(self, functions: dict[str, Callable[..., object]], tools: list[dict], *, timeout_s: float = 5.0,
                 max_output_chars: int = MAX_OUTPUT_CHARS):
        self.functions = dict(functions)
        self.tools = list(tools)
        self.timeout_s = timeout_s
        self.max_output_chars = max_output_chars

    def reset(self, example: Example) -> list[dict]:
        return []

    def close(self) -> None:
        pass

    def invoke(self, fn: Callable[..., object], arguments: dict) -> object:
        """Run one tool function; the default is a worker thread with the per-call timeout."""
        return call_in_thread(fn, arguments, self.timeout_s)

    def answer(self, call: ToolCall) -> tuple[str, bool]:
        """(the text the model reads, whether the call failed) for one well-formed call."""
        fn = self.functions.get(call.name)
        if fn is None:
            known = ", ".join(sorted(self.functions)) or "none"
            return f"Error: unknown tool {call.name!r}; the tools are: {known}", True
        arguments = call.arguments
        if not isinstance(arguments, dict):
            return f"Error: the arguments of {call.name!r} must be a JSON object", True
        problem = argument_problem(fn, arguments)
        if problem:
            return f"Error: bad arguments for {call.name!r}: {problem}", True
        try:
            return render_output(self.invoke(fn, arguments)), False
        except ToolTimeout:
            return f"Error: {call.name!r} timed out after {self.timeout_s:g} s", True
        except ToolError as err:
            return as_error(str(err)), True
        except BaseException as err:  # noqa: B036 (contained: the model reads it, the run goes on)
            if isinstance(err, KeyboardInterrupt):
                raise
            return f"Error: {call.name!r} raised {type(err).__name__}: {err}", True

    def step(self, turn: ParsedTurn) -> StepResult:
        start = time.monotonic()
        messages, errors = [], 0
        for call in turn.calls:
            if time.monotonic() - start >= self.timeout_s:  # the step's own limit: no call starts after it,
                messages.append(tool_message(  # so a step ends within 2 x timeout_s whatever its calls
                    call.id, call.name, f"Error: not run: the step's time limit of {self.timeout_s:g} s ran out"))
                errors += 1
                continue
            try:
                content, failed = self.answer(call)
            except Exception as err:  # a bug in a subclass's answer() is still contained
                content, failed = f"Error: {type(err).__name__}: {err}", True
            messages.append(tool_message(call.id, call.name, truncate(content, self.max_output_chars)))
            errors += failed
        messages += error_messages(turn.errors, self.max_output_chars)
        return StepResult(messages, errors=errors + len(turn.errors), seconds=time.monotonic() - start)


def argument_problem(fn: Callable[..., object], arguments: dict) -> str | None:
    """Why fn(**arguments) would not bind (missing or unexpected arguments), or None."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have none: let the call itself decide
        return None
    try:
        signature.bind(**arguments)
    except TypeError as err:
        return str(err)
    return None
