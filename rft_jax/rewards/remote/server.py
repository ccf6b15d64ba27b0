"""`rft-jax reward serve`: any reward as an HTTP endpoint (starlette + uvicorn).

Bound to 127.0.0.1 by default; binding any other address requires a bearer token,
because a reward server runs code on what it is sent. A request is refused with an
OpenAI-style error body, {"error": {"message", "type", "param", "code"}}: 413 over the
body limit (checked before the body is read whole), 400 for a body that is not a JSON
list or holds too many samples. A malformed sample inside a good list is answered in
its own response item (protocol.score_items), so the rest of the batch is still scored.
"""

from __future__ import annotations

import hmac
import threading
from typing import Any

MAX_BODY_BYTES = 16 * 1024 * 1024  # `--max-body-mib`: 32 samples with 16k-token completions is about 2 MiB
MAX_SAMPLES = 1024  # `--max-samples`; the client sends batches of 32 by default
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def error_body(message: str, *, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    """OpenAI's error shape, as `rft-jax serve` answers too."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def make_app(scorer: Any, *, token: str | None = None, added_latency_s: float = 0.0,
             max_body_bytes: int = MAX_BODY_BYTES, max_samples: int = MAX_SAMPLES):
    """`added_latency_s`: a pause before each request batch is answered, standing in for a remote reward's
    latency in benchmarks (it does not hold a thread: other requests are served meanwhile)."""
    import asyncio

    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from rft_jax.data.json_input import JsonError, TooLarge, parse_json, read_limited
    from rft_jax.rewards.remote.protocol import score_items

    def error(status: int, message: str, **kw) -> JSONResponse:
        return JSONResponse(error_body(message, **kw), status_code=status)

    async def score(request: Request) -> JSONResponse:
        if token is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return error(401, "missing or wrong bearer token", code="invalid_api_key")
        try:
            items = parse_json(await read_limited(request.stream(), request.headers.get("content-length"),
                                                  max_body_bytes))
        except TooLarge as err:
            return error(413, str(err), code="request_too_large")
        except JsonError as err:
            return error(400, f"the request body is not a JSON list of samples: {err}", code="invalid_json")
        if not isinstance(items, list):
            return error(400, f"the request body must be a JSON list of samples, got {type(items).__name__}: "
                              '[{"id": ..., "messages": [..., {"role": "assistant", "content": ...}]}]')
        if len(items) > max_samples:
            return error(400, f"{len(items)} samples in one request; this server takes at most {max_samples} "
                              "(send smaller batches, or raise --max-samples)", code="too_many_samples")
        if added_latency_s > 0:
            await asyncio.sleep(added_latency_s)
        return JSONResponse(await run_in_threadpool(score_items, scorer, items))

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:  # a wrong path or method
        return error(exc.status_code, str(exc.detail))

    async def crash(request: Request, exc: Exception) -> JSONResponse:
        # The traceback goes to the server log (starlette re-raises after this); the client gets no code or paths.
        return error(500, "internal error in the reward server; its log has the details", kind="server_error")

    return Starlette(routes=[Route("/", score, methods=["POST"]), Route("/score", score, methods=["POST"]),
                             Route("/health", health, methods=["GET"])],
                     exception_handlers={HTTPException: http_error, Exception: crash})


def check_binding(host: str, token: str | None) -> None:
    if host not in LOOPBACK and not token:
        raise ValueError(f"binding {host} exposes the reward beyond this machine: set a bearer token "
                         "(--token-env VAR) or bind 127.0.0.1")


def serve(scorer: Any, *, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          added_latency_s: float = 0.0, max_body_bytes: int = MAX_BODY_BYTES, max_samples: int = MAX_SAMPLES) -> None:
    import uvicorn

    check_binding(host, token)
    app = make_app(scorer, token=token, added_latency_s=added_latency_s, max_body_bytes=max_body_bytes,
                   max_samples=max_samples)
    uvicorn.run(app, host=host, port=port, log_level="info")


def start_in_thread(scorer: Any, *, host: str = "127.0.0.1", token: str | None = None, added_latency_s: float = 0.0):
    """Start a server on a free port in a background thread; returns (server, port). For tests
    and notebooks; stop with `server.should_exit = True`."""
    import socket

    import uvicorn

    check_binding(host, token)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    config = uvicorn.Config(make_app(scorer, token=token, added_latency_s=added_latency_s), log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        threading.Event().wait(0.01)
    return server, sock.getsockname()[1]
