"""An OpenAI-compatible chat-completions app (starlette) over the engine; `rft-jax serve` runs it.

Endpoints: POST /v1/chat/completions (streaming and not), GET /v1/models,
GET /health. With a token, every request must carry `Authorization: Bearer
<token>`. The command line (host, port, --token-env) is rft_jax/cli/serve.py.
"""

from __future__ import annotations

import hmac
import json
import time

from rft_jax.serving.bridge import EngineFailure, stream_choices
from rft_jax.serving.engine import Engine
from rft_jax.serving.protocol import (
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

MAX_BODY_BYTES = 16 * 1024 * 1024
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def make_app(engine: Engine, tokenizer, model_name: str, *, token: str | None = None):
    """The ASGI app; the engine must already be started."""
    from starlette.applications import Starlette  # noqa: PLC0415
    from starlette.requests import Request  # noqa: PLC0415
    from starlette.responses import JSONResponse, StreamingResponse  # noqa: PLC0415
    from starlette.routing import Route  # noqa: PLC0415

    created = int(time.time())

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
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return error(413, "request body too large")
        try:
            req = parse_chat_request(json.loads(body), model_name)
            prompt_ids = tokenizer.apply_chat_template(req.messages, tools=req.tools)
        except RequestError as err:
            return error(err.status, str(err), kind=err.kind, param=err.param, code=err.code)
        except ValueError as err:  # bad JSON, or a chat template that rejects the messages
            return error(400, f"invalid request: {err}")
        room = engine.config.max_context - len(prompt_ids)
        if room < 1 or (req.max_tokens or 0) > room:
            return error(400, f"this model's context is {engine.config.max_context} tokens; the prompt has "
                              f"{len(prompt_ids)} and max_tokens asks for {req.max_tokens}",
                         param="max_tokens" if room >= 1 else "messages", code="context_length_exceeded")
        max_tokens = req.max_tokens or room
        counts = [0] * req.n
        cid = completion_id()
        if req.stream:
            return StreamingResponse(sse(req, cid, stream_choices(engine, tokenizer, prompt_ids, req, max_tokens,
                                                                  counts), counts, len(prompt_ids)),
                                     media_type="text/event-stream")
        texts, reasons = [""] * req.n, ["stop"] * req.n
        try:
            async for ev in stream_choices(engine, tokenizer, prompt_ids, req, max_tokens, counts):
                texts[ev.index] += ev.text
                if ev.finish_reason:
                    reasons[ev.index] = ev.finish_reason
        except EngineFailure as err:
            return error(500, str(err), kind="server_error")
        return JSONResponse(chat_completion(cid, model_name, texts, reasons, usage(len(prompt_ids), sum(counts))))

    async def sse(req, cid, events, counts, prompt_tokens):
        def line(obj) -> str:
            return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

        for i in range(req.n):
            yield line(chunk(cid, model_name, i, {"role": "assistant", "content": ""}))
        try:
            async for ev in events:
                if ev.text:
                    yield line(chunk(cid, model_name, ev.index, {"content": ev.text}))
                if ev.finish_reason:
                    yield line(chunk(cid, model_name, ev.index, {}, ev.finish_reason))
        except EngineFailure as err:
            yield line(error_body(str(err), kind="server_error"))
        if req.include_usage:
            yield line(usage_chunk(cid, model_name, usage(prompt_tokens, sum(counts))))
        yield "data: [DONE]\n\n"

    return Starlette(routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ])

