"""`rft-jax serve`: an OpenAI-compatible chat-completions server (starlette + uvicorn) for a model.

    rft-jax serve --model smollm2-135m-instruct [--adapter runs/x/adapter] [--port 8000]

Endpoints: POST /v1/chat/completions (streaming and not), GET /v1/models,
GET /health. Bound to 127.0.0.1 unless --host says otherwise; with
--token-env NAME every request must carry `Authorization: Bearer $NAME`.

Reasoning (`--reasoning.mode on`, rft_jax/data/reasoning.py): the model thinks
between the tags, then answers. Prompts are rendered as training renders them
(Qwen3's `enable_thinking`, else an instruction and an opened tag); with the
mode off a native template is rendered with thinking switched off.

    rft-jax serve --model path/to/Qwen3-0.6B --reasoning.mode on --reasoning.think-budget 1024

- `choices[i].message.reasoning_content` is the thinking and `content` the
  answer after the closing tag (the tag is in neither); streamed, the chunks
  carry `delta.reasoning_content`, then `delta.content`. A completion that
  never closes its thinking (it ended, or hit a stop string, inside it) has
  content "". `usage.completion_tokens_details.reasoning_tokens` counts the
  thinking tokens. With the mode off there is no `reasoning_content`.
- Think budget per request: `max_reasoning_tokens` (an integer >= 0; 0 closes
  the thinking at once), or `reasoning_effort` ("minimal" 0, "low" 256,
  "medium" 1024, "high" 4096 tokens), else --reasoning.think-budget. Giving
  both is refused (400), as is either with the mode off. At the budget the
  server writes the closing tag and --reasoning.answer-cue in place of sampled
  tokens, and the model reads them and answers.
- `max_tokens` limits the answer (the forced tag included, so it must exceed
  the tag's tokens), not the thinking; without it the answer gets
  --reasoning.answer-budget. An effort level or the
  server's budget is cut to the context the answer leaves; an explicit
  max_reasoning_tokens that does not fit is refused (400).
- Stop strings apply to the whole text, thinking included.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import tyro

from rft_jax.data.reasoning import ReasoningConfig, plan_reasoning


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
    reasoning: ReasoningConfig = ReasoningConfig()
    """Reasoning mode: think within a budget, then answer (see the reasoning fields above)."""
    max_body_mib: float = 8.0
    """Largest request body taken, in MiB; a larger one is refused (413) before it is read."""
    max_messages: int = 1024
    """Most messages one request may hold; more are refused (400)."""


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
    try:
        plan = plan_reasoning(args.reasoning, served.tokenizer)
    except ValueError as err:
        print(f"rft-jax serve: {err}", file=sys.stderr)
        return 2
    name = args.served_name or served.name
    app = make_app(served.engine.start(), served.tokenizer, name, token=token, reasoning=plan,
                   max_body_bytes=int(args.max_body_mib * 2**20), max_messages=args.max_messages)
    print(f"rft-jax serve: {name} on http://{args.host}:{args.port}/v1 ({args.slots} slots x "
          f"{args.max_context} tokens)", file=sys.stderr)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        served.engine.stop()
    return 0
