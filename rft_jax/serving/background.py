"""Running the server inside this process on a free loopback port (tests, the benchmark, local judges)."""

from __future__ import annotations

import socket
import threading
import time


class BackgroundServer:
    """`with BackgroundServer(app) as server: ... server.base_url ...`; uvicorn runs in a thread."""

    def __init__(self, app, host: str = "127.0.0.1"):
        self.app, self.host = app, host
        self.server = self.thread = self.sock = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def __enter__(self) -> BackgroundServer:
        import uvicorn  # noqa: PLC0415

        # Binding here (port 0) rather than in uvicorn means the port is known and never raced for.
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.host, 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
