"""`remote`: an environment that lives behind HTTP (bring your own orchestrator).

The protocol (JSON over POST; docs/environments.md has the full description):
    {url}/reset  {"example": <the example's JSONL record>}
                 -> {"session": str, "messages": [...], "tools": [...] (optional)}
    {url}/step   {"session", "content", "tool_calls": [OpenAI tool_calls], "errors": [str]}
                 -> {"messages": [...], "reward": float, "done": bool, "errors": int (optional)}
    {url}/close  {"session"}  (best effort; the answer is ignored)
Every request has the timeout `timeout_s`. A network error, an HTTP error, a timeout
or an answer that is not the expected JSON becomes one error tool message (errors=1),
never an exception; if /reset failed there is no session and the first step ends the
episode with that error.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request

from rft_jax.data.example import Example
from rft_jax.data.tool_calls import ParsedTurn
from rft_jax.environments.base import MAX_OUTPUT_CHARS, StepResult, tool_message, truncate

log = logging.getLogger(__name__)


class RemoteError(Exception):
    pass


def post(url: str, payload: dict, timeout_s: float) -> dict:
    """POST JSON, return the JSON object answered; any failure is a RemoteError saying what went wrong."""
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read()
    except TimeoutError:
        raise RemoteError(f"no answer from {url} within {timeout_s:g} s") from None
    except urllib.error.HTTPError as err:
        raise RemoteError(f"{url}: HTTP {err.code} {err.reason}") from None
    except Exception as err:  # URLError (refused, or a timeout while connecting), connection resets
        reason = getattr(err, "reason", err)
        raise RemoteError(f"{url}: {type(err).__name__}: {reason}") from None
    try:
        answer = json.loads(body)
    except ValueError:
        raise RemoteError(f"{url} answered something that is not JSON: {body[:200]!r}") from None
    if not isinstance(answer, dict):
        raise RemoteError(f"{url} answered {type(answer).__name__}, not a JSON object")
    return answer


def messages_of(answer: dict, url: str) -> list[dict]:
    messages = answer.get("messages", [])
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise RemoteError(f"{url}: `messages` must be a list of message objects")
    return [{"role": "tool", **m, "content": truncate(str(m.get("content", "")), MAX_OUTPUT_CHARS)}
            for m in messages]


class RemoteEnvironment:
    """The Environment protocol forwarded to an HTTP server, one session per episode."""

    def __init__(self, url: str, *, timeout_s: float = 5.0, tools: list | None = None):
        if not url:
            raise ValueError("the remote environment needs EnvironmentConfig.url (e.g. http://localhost:8000)")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.tools = list(tools or [])
        self.session: str | None = None
        self.failure = "the environment was not reset"

    def reset(self, example: Example) -> list[dict]:
        """Open a session; on failure, log it and return no messages (the first step then reports it)."""
        self.session = None
        try:
            answer = post(f"{self.url}/reset", {"example": example.to_record()}, self.timeout_s)
            messages = messages_of(answer, f"{self.url}/reset")
            if not isinstance(answer.get("session"), str):
                raise RemoteError(f"{self.url}/reset: `session` must be a string")
        except RemoteError as err:
            log.warning("remote environment: reset failed: %s", err)
            self.failure = f"reset failed: {err}"
            return []
        if isinstance(answer.get("tools"), list):
            self.tools = answer["tools"]
        self.session = answer["session"]
        return messages

    def step(self, turn: ParsedTurn) -> StepResult:
        start = time.monotonic()
        if self.session is None:
            return self.error_result(turn, f"Error: the remote environment is unavailable ({self.failure})",
                                     start, done=True)
        try:
            payload = {"session": self.session, "content": turn.content,
                       "tool_calls": [call.to_openai() for call in turn.calls], "errors": list(turn.errors)}
            answer = post(f"{self.url}/step", payload, self.timeout_s)
            messages = messages_of(answer, f"{self.url}/step")
            reward = float(answer.get("reward", 0.0))
            errors = answer.get("errors", len(turn.errors))
            errors = int(errors) if isinstance(errors, (int, float)) else len(turn.errors)
        except Exception as err:  # RemoteError, or a field of the wrong type: contained either way
            return self.error_result(turn, f"Error: the remote environment failed: {err}", start)
        return StepResult(messages, reward=reward, done=bool(answer.get("done", False)), errors=errors,
                          seconds=time.monotonic() - start)

    def error_result(self, turn: ParsedTurn, text: str, start: float, done: bool = False) -> StepResult:
        """One error tool message (answering the first call, if any) and errors=1."""
        first = turn.calls[0] if turn.calls else None
        message = tool_message(first.id if first else "remote_error", first.name if first else "remote",
                               truncate(text, MAX_OUTPUT_CHARS))
        return StepResult([message], done=done, errors=1, seconds=time.monotonic() - start)

    def close(self) -> None:
        if self.session is not None:
            try:
                post(f"{self.url}/close", {"session": self.session}, self.timeout_s)
            except RemoteError as err:
                log.info("remote environment: close failed (ignored): %s", err)
            self.session = None
