"""`rft-jax reward serve`: any reward as an HTTP endpoint (starlette + uvicorn).

Bound to 127.0.0.1 by default; binding any other address requires a bearer token,
because a reward server runs code on what it is sent.
"""

from __future__ import annotations

import hmac
import json
import threading
from typing import Any

MAX_BODY_BYTES = 64 * 1024 * 1024
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def make_app(scorer: Any, *, token: str | None = None, added_latency_s: float = 0.0):
    """`added_latency_s`: a pause before each request batch is answered, standing in for a remote reward's
    latency in benchmarks (it does not hold a thread: other requests are served meanwhile)."""
    import asyncio

    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from rft_jax.rewards.remote.protocol import score_items

    async def score(request: Request) -> JSONResponse:
        if token is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return JSONResponse({"error": "request too large"}, status_code=413)
        try:
            items = json.loads(body)
            if not isinstance(items, list):
                raise ValueError("body must be a JSON list")
        except ValueError as err:
            return JSONResponse({"error": f"bad request: {err}"}, status_code=400)
        if added_latency_s > 0:
            await asyncio.sleep(added_latency_s)
        return JSONResponse(await run_in_threadpool(score_items, scorer, items))

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/", score, methods=["POST"]), Route("/score", score, methods=["POST"]),
                             Route("/health", health, methods=["GET"])])


def check_binding(host: str, token: str | None) -> None:
    if host not in LOOPBACK and not token:
        raise ValueError(f"binding {host} exposes the reward beyond this machine: set a bearer token "
                         "(--token-env VAR) or bind 127.0.0.1")


def serve(scorer: Any, *, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          added_latency_s: float = 0.0) -> None:
    import uvicorn

    check_binding(host, token)
    uvicorn.run(make_app(scorer, token=token, added_latency_s=added_latency_s), host=host, port=port,
                log_level="info")


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
