"""Tool calling in the server: the calls read from an answer, and held back from a stream until they are whole.

The prompt is `render_prompt`'s, as training renders it: a template with its own
tool format gets the tools and the conversation's tool turns natively; one
without (SmolLM2's) gets the documented fallback, the tools described in the
system turn and calls in Hermes tags (rft_jax/data/tool_prompt.py). So tools are
never dropped without a word. Under tool_choice "none" the tools are not offered,
but earlier calls in the conversation are still rendered.

A choice's answer is read for calls once it is complete (`read_calls`), in the
template's format, with the parser training uses. A malformed call is no error:
the raw text is the answer (finish_reason "stop"), so the client sees what the
model wrote. While a choice streams, `ToolStream` shows its text as content
until it could be starting a call (the opening marker, or a prefix of it at the
end of what has arrived); from there it holds everything, and at the end the
calls go out as `tool_calls` deltas, or the held text as content if it was no
call after all. A call's text is never streamed as content.
"""

from __future__ import annotations

import dataclasses
import re
import uuid

from rft_jax.data.tool_calls import PYTHON_TAG, call_opening, parse_tool_calls
from rft_jax.serving.text_stream import held_back

DEFAULT_ID = re.compile(r"call_\d+")  # the parser's id for a call the model gave no id


@dataclasses.dataclass(frozen=True)
class ToolAnswer:
    content: str | None  # the text outside the calls (None if there is none), or the whole text without calls
    calls: list[dict]  # OpenAI `tool_calls` entries: {"id", "type": "function", "function": {"name", "arguments"}}


def read_calls(text: str, fmt: str, parallel: bool = True) -> ToolAnswer:
    """The answer's calls; a turn with any malformed call stays text. `parallel` False keeps the first call.

    The parser numbers calls within the turn (call_0, ...); here they get ids unique across the
    conversation, as a client keying tool results by id expects."""
    parsed = parse_tool_calls(text, fmt)
    if not parsed.calls or parsed.errors:
        return ToolAnswer(text, [])
    calls = [call.to_openai() for call in (parsed.calls if parallel else parsed.calls[:1])]
    for call in calls:
        if DEFAULT_ID.fullmatch(call["id"]):
            call["id"] = f"call_{uuid.uuid4().hex[:24]}"
    return ToolAnswer(parsed.content or None, calls)


def finish_reason(reason: str, calls: list[dict]) -> str:
    """OpenAI's "tool_calls" for a turn that ended by itself on calls; a cut one keeps "length"."""
    return "tool_calls" if calls and reason == "stop" else reason


class ToolStream:
    """One choice's answer deltas in, content deltas out; `finish` gives the last content and the calls.

    The streamed content is the answer's text up to the first call (trailing whitespace held until more text
    follows), then what `read_calls` puts after it; with no calls it joins to the whole text, as without tools.
    Hermes calls may start anywhere; a llama3 call is the whole message, so only its start is held.
    """

    def __init__(self, fmt: str, parallel: bool = True):
        self.fmt, self.parallel = fmt, parallel
        self.opening = call_opening(fmt)
        self.shown: list[str] = []  # content handed out
        self.pending = ""  # held back, not (yet) known to start a call
        self.call: list[str] = []  # everything from the opening marker on, once it has appeared
        self.free = False  # llama3: the message did not start with a call, so none can follow

    def push(self, delta: str) -> str:
        if self.call:
            self.call.append(delta)
            return ""
        text = self.pending + delta
        if self.free:
            at, cut = -1, len(text)
        elif self.fmt == "llama3":
            body = text.lstrip()
            at = 0 if body.startswith((self.opening, PYTHON_TAG)) else -1
            cut = 0 if at == 0 or PYTHON_TAG.startswith(body) else len(text)
            self.free = cut > 0
        else:
            at = text.find(self.opening)
            cut = at if at >= 0 else len(text) - held_back(text, (self.opening,))
        show = len(text[:cut].rstrip())
        out, rest = text[:show], text[show:]
        if at >= 0:
            self.call, self.pending = [rest], ""
        else:
            self.pending = rest
        self.shown.append(out)
        return out

    def finish(self, delta: str = "") -> tuple[str, list[dict]]:
        """(the content still to show, the calls); call once, at the choice's end."""
        out = self.push(delta)  # text the last delta releases: it goes out with the rest
        held = self.pending + "".join(self.call)
        if not self.call:
            return out + held, []
        shown = "".join(self.shown)  # `out` included
        answer = read_calls(shown + held, self.fmt, self.parallel)
        if not answer.calls:
            return out + held, []
        content, before = answer.content or "", shown.strip()
        # The parser strips the content; what was streamed may have had leading whitespace.
        rest = content[len(before):] if content.startswith(before) else content
        return out + rest, answer.calls
