"""An OpenAI-compatible chat-completions app (starlette) over the engine; `rft-jax serve` runs it.

Endpoints: POST /v1/chat/completions (streaming and not), GET /v1/models,
GET /health. With a token, every request must carry `Authorization: Bearer
<token>`. With a reasoning plan whose mode is on, prompts open the thinking and
each message carries `reasoning_content` beside `content` (serving/reasoning.py).
With `tools` a message carries the calls the answer made as `tool_calls`, streamed
too, so the `openai` client's tool loop runs against it (serving/tools.py).
The command line (host, port, --token-env, --reasoning.*) is rft_jax/cli/serve.py.
"""

from __future__ import annotations

import hmac
import json
import time

from rft_jax.data.json_input import JsonError, TooLarge, parse_json, read_limited
from rft_jax.data.reasoning import ReasoningPlan, render_prompt
from rft_jax.data.tool_calls import tool_format
from rft_jax.serving.bridge import EngineFailure, stream_choices
from rft_jax.serving.engine import Engine
from rft_jax.serving.protocol import (
    MAX_MESSAGES,
    RequestError,
    chat_completion,
    chunk,
    completion_id,
    error_body,
    models_list,
    parse_chat_request,
    usage,
    usage_chunk,
)
from rft_jax.serving.reasoning import request_budgets
from rft_jax.serving.tools import ToolStream, finish_reason, read_calls

MAX_BODY_BYTES = 8 * 1024 * 1024  # `rft-jax serve --max-body-mib`; a long conversation is well under 1 MiB
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def make_app(engine: Engine, tokenizer, model_name: str, *, token: str | None = None,
             reasoning: ReasoningPlan | None = None, max_body_bytes: int = MAX_BODY_BYTES,
             max_messages: int = MAX_MESSAGES):
    """The ASGI app; the engine must already be started. `reasoning`: `plan_reasoning` of the server's
    ReasoningConfig for this tokenizer (None: prompts rendered as they are, no thinking). A body over
    `max_body_bytes` is refused (413) before it is read whole, and one of over `max_messages` messages (400)."""
    from jinja2 import TemplateError  # noqa: PLC0415 (what a chat template's raise_exception raises)
    from starlette.applications import Starlette  # noqa: PLC0415
    from starlette.exceptions import HTTPException  # noqa: PLC0415
    from starlette.requests import Request  # noqa: PLC0415
    from starlette.responses import JSONResponse, StreamingResponse  # noqa: PLC0415
    from starlette.routing import Route  # noqa: PLC0415

    created = int(time.time())
    thinks = reasoning is not None and reasoning.enabled
    tags = (reasoning.config.open_tag, reasoning.config.close_tag) if thinks else ("", "")

    def error(status: int, message: str, **kw) -> JSONResponse:
        return JSONResponse(error_body(message, **kw), status_code=status)

    def authorized(request: Request) -> bool:
        if token is None:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    async def models(request: Request):
        if not authorized(request):
            return error(401, "missing or wrong bearer token", code="invalid_api_key")
        return JSONResponse(models_list(model_name, created))

    async def health(request: Request):
        return JSONResponse({"status": "ok", "busy_slots": engine.busy, "steps": engine.steps})

    async def chat(request: Request):
        if not authorized(request):
            return error(401, "missing or wrong bearer token", code="invalid_api_key")
        try:
            body = parse_json(await read_limited(request.stream(), request.headers.get("content-length"),
                                                 max_body_bytes))
            req = parse_chat_request(body, model_name, max_messages=max_messages)
        except TooLarge as err:
            return error(413, str(err), code="request_too_large")
        except JsonError as err:
            return error(400, f"the request body is not a JSON object: {err}", code="invalid_json")
        except RequestError as err:
            return error(err.status, str(err), kind=err.kind, param=err.param, code=err.code)
        try:  # tools placed as training places them: natively, or the fallback in the system turn
            prompt_ids = render_prompt(tokenizer, req.messages, req.offered_tools, reasoning)
        except (ValueError, TypeError, KeyError, TemplateError, RecursionError) as err:
            # the messages passed validation, but this model's chat template rejects them or cannot show the tools
            return error(400, f"the chat template cannot render these messages: {brief_error(err)}",
                         param="messages")
        room = engine.config.max_context - len(prompt_ids)
        if room < 1 or (req.max_tokens or 0) > room:
            return error(400, f"this model's context is {engine.config.max_context} tokens; the prompt has "
                              f"{len(prompt_ids)} and max_tokens asks for {req.max_tokens}",
                         param="max_tokens" if room >= 1 else "messages", code="context_length_exceeded")
        try:
            think, max_tokens = request_budgets(req, reasoning, room)
        except RequestError as err:
            return error(err.status, str(err), kind=err.kind, param=err.param, code=err.code)
        counts, thought = [0] * req.n, [0] * req.n
        cid = completion_id()
        events = stream_choices(engine, tokenizer, prompt_ids, req, max_tokens, counts, think, tags)
        if req.stream:
            return StreamingResponse(sse(req, cid, events, counts, thought, len(prompt_ids)),
                                     media_type="text/event-stream")
        # Pieces joined at the end: appending to a growing string copies it on every token.
        texts, thinking, reasons = [[] for _ in range(req.n)], [[] for _ in range(req.n)], ["stop"] * req.n
        try:
            async for ev in events:
                texts[ev.index].append(ev.text)
                thinking[ev.index].append(ev.reasoning)
                if ev.finish_reason:
                    reasons[ev.index], thought[ev.index] = ev.finish_reason, ev.reasoning_tokens
        except EngineFailure as err:
            return error(500, str(err), kind="server_error")
        texts, thinking = ["".join(t) for t in texts], ["".join(t) for t in thinking]
        calls = [[] for _ in texts]
        if req.offered_tools is not None:
            fmt = tool_format(tokenizer)
            answers = [read_calls(text, fmt, req.parallel_tool_calls) for text in texts]
            texts, calls = [a.content for a in answers], [a.calls for a in answers]
            reasons = [finish_reason(r, c) for r, c in zip(reasons, calls)]
        return JSONResponse(chat_completion(cid, model_name, texts, reasons, tally(len(prompt_ids), counts, thought),
                                            thinking if thinks else None, calls))

    def tally(prompt_tokens: int, counts: list[int], thought: list[int]) -> dict:
        return usage(prompt_tokens, sum(counts), sum(thought) if thinks else None)

    async def sse(req, cid, events, counts, thought, prompt_tokens):
        def line(obj) -> str:
            return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

        for i in range(req.n):
            yield line(chunk(cid, model_name, i, {"role": "assistant", "content": ""}))
        # with tools, what may be a call is held back, and the calls go out at the end of their choice
        calls_held = None
        if req.offered_tools is not None:
            calls_held = [ToolStream(tool_format(tokenizer), req.parallel_tool_calls) for _ in range(req.n)]
        try:
            async for ev in events:
                text, calls = ev.text, []
                if calls_held is not None:
                    held = calls_held[ev.index]
                    text, calls = held.finish(text) if ev.finish_reason else (held.push(text), [])
                # thinking as `reasoning_content`, the answer as `content`; the closing tag in neither
                delta = {"reasoning_content": ev.reasoning} if ev.reasoning else {}
                if text:
                    delta["content"] = text
                if delta:
                    yield line(chunk(cid, model_name, ev.index, delta))
                for k, call in enumerate(calls):  # one chunk per call, arguments whole (OpenAI's delta shape)
                    yield line(chunk(cid, model_name, ev.index, {"tool_calls": [{"index": k, **call}]}))
                if ev.finish_reason:
                    thought[ev.index] = ev.reasoning_tokens
                    yield line(chunk(cid, model_name, ev.index, {}, finish_reason(ev.finish_reason, calls)))
        except EngineFailure as err:
            yield line(error_body(str(err), kind="server_error"))
        if req.include_usage:
            yield line(usage_chunk(cid, model_name, tally(prompt_tokens, counts, thought)))
        yield "data: [DONE]\n\n"

    async def http_error(request: Request, exc: HTTPException):  # a wrong path or method, as JSON
        return error(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None)

    async def crash(request: Request, exc: Exception):
        # The traceback goes to the server log (starlette re-raises after this); the client gets no paths or code.
        return error(500, "internal server error; the server log has the details", kind="server_error")

    return Starlette(routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ], exception_handlers={HTTPException: http_error, Exception: crash})


def brief_error(err: BaseException, limit: int = 300) -> str:
    text = str(err) or type(err).__name__
    return text if len(text) <= limit else text[:limit] + "..."

