"""From the engine thread to the event loop: the choices of one request as a stream of text events.

Each choice is one engine `Request`; their tokens arrive on the engine thread
and are moved onto the event loop with `call_soon_threadsafe`, where they are
detokenized (with stop strings) and yielded as (choice, text, finish_reason).
In reasoning mode the text is split into the thinking and the answer as it
arrives. Leaving the stream early (client gone, error) cancels every choice's
slot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import AsyncIterator

from rft_jax.serving.engine import Engine, Request
from rft_jax.serving.protocol import ChatRequest
from rft_jax.serving.reasoning import ReasoningStream, ThinkBudget
from rft_jax.serving.text_stream import TextStream


@dataclasses.dataclass(frozen=True)
class Event:
    index: int
    text: str  # the answer in reasoning mode
    finish_reason: str | None = None  # "stop" | "length" once per choice
    reasoning: str = ""  # thinking text (reasoning mode)
    reasoning_tokens: int = 0  # the choice's thinking tokens, on its finish event


class EngineFailure(RuntimeError):
    """The engine failed a step that this request was part of."""


def _event(index: int, text: str, split: ReasoningStream | None, finish: str | None = None,
           reasoning_tokens: int = 0) -> Event:
    if split is None:
        return Event(index, text, finish)
    thinking, answer = split.finish(text) if finish else split.push(text)
    return Event(index, answer, finish, thinking, reasoning_tokens)


async def stream_choices(engine: Engine, tokenizer, prompt_ids: list[int], req: ChatRequest, max_tokens: int,
                         counts: list[int], think: ThinkBudget | None = None,
                         tags: tuple[str, str] = ("<think>", "</think>")) -> AsyncIterator[Event]:
    """Yields text events of the request's n choices; `counts[i]` is updated with choice i's token count.

    With `think` (reasoning mode) each choice thinks within that budget, max_tokens limits its answer, and
    the events carry the thinking and the answer apart, split at `tags`."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    base_seed = req.seed if req.seed is not None else random.getrandbits(32)
    requests, streams, splits = [], [], []
    for i in range(req.n):
        def emit(token, finish, i=i):
            loop.call_soon_threadsafe(queue.put_nowait, (i, token, finish))

        requests.append(Request(list(prompt_ids), max_tokens, emit, temperature=req.temperature, top_p=req.top_p,
                                seed=(base_seed + i) & 0xFFFFFFFF, think=think))
        streams.append(TextStream(tokenizer, req.stop, skip_ids=engine.eos_ids))
        splits.append(None if think is None else ReasoningStream(*tags))
    for r in requests:
        engine.submit(r)
    open_choices = req.n
    try:
        while open_choices:
            i, token, finish = await queue.get()
            stream = streams[i]
            if finish is None:
                if stream.stopped:
                    continue  # tokens already in flight after a stop string
                counts[i] += 1
                text = stream.push(token)
                if stream.stopped:
                    requests[i].cancel()
                if text:
                    event = _event(i, text, splits[i])
                    if event.text or event.reasoning:
                        yield event
                continue
            open_choices -= 1
            if finish.startswith("error"):
                raise EngineFailure(finish)
            reason = "length" if finish == "length" and not stream.stopped else "stop"
            yield _event(i, stream.flush(), splits[i], reason, requests[i].thinking_tokens)
    finally:
        for r in requests:
            r.cancel()
