"""`rft-jax serve`: an OpenAI-compatible chat-completions server (starlette + uvicorn) for a model.

    rft-jax serve --model smollm2-135m-instruct [--adapter runs/x/adapter] [--port 8000]

Endpoints: POST /v1/chat/completions (streaming and not), GET /v1/models,
GET /health. Bound to 127.0.0.1 unless --host says otherwise; with
--token-env NAME every request must carry `Authorization: Bearer $NAME`.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import tyro


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """The model to serve, where to listen, and the engine's batch."""

    model: str | None = None
    """Registry key, Hugging Face folder (e.g. an exported model) or .gguf (default: smollm2-135m-instruct)."""
    adapter: str | None = None
    """PEFT LoRA folder (adapter_config.json + adapter_model.safetensors)."""
    served_name: str | None = None
    """Model id clients send and /v1/models lists (default: --model)."""
    host: str = "127.0.0.1"
    """Bind address (default loopback only)."""
    port: int = 8000
    """TCP port."""
    token_env: str | None = None
    """Environment variable holding a bearer token that requests must carry."""
    slots: int = 16
    """Sequences decoded together (continuous batching)."""
    max_context: int = 1024
    """Tokens per sequence, prompt plus completion."""


def main(argv: list[str]) -> int:
    args = tyro.cli(ServeOptions, args=argv, prog="rft-jax serve", description=__doc__)
    from rft_jax.serving.server import LOOPBACK, make_app  # noqa: PLC0415 (keeps --help fast)

    token = os.environ.get(args.token_env) if args.token_env else None
    if args.token_env and not token:
        print(f"rft-jax serve: environment variable {args.token_env} is empty", file=sys.stderr)
        return 2
    if args.host not in LOOPBACK and token is None:
        print(f"rft-jax serve: WARNING: serving on {args.host} without a bearer token (--token-env)", file=sys.stderr)
    import uvicorn  # noqa: PLC0415

    from rft_jax.serving.loading import load_served_model  # noqa: PLC0415

    served = load_served_model(args.model, args.adapter, slots=args.slots, max_context=args.max_context)
    name = args.served_name or served.name
    app = make_app(served.engine.start(), served.tokenizer, name, token=token)
    print(f"rft-jax serve: {name} on http://{args.host}:{args.port}/v1 ({args.slots} slots x "
          f"{args.max_context} tokens)", file=sys.stderr)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        served.engine.stop()
    return 0
