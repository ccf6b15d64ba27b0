"""Serving a model over HTTP: continuous batching engine, OpenAI-compatible server, LoRA adapters.

    rft-jax serve --model smollm2-135m-instruct [--adapter ADAPTER_DIR]

Library use (tests, in-process judges):

    engine = Engine(params, cfg, eos_ids=tok.eos_ids).start()
    with BackgroundServer(make_app(engine, tok, "m")) as server:
        openai.OpenAI(base_url=server.base_url, api_key="x").chat.completions.create(...)

Reasoning mode: `make_app(..., reasoning=plan_reasoning(ReasoningConfig(mode="on"), tok))`.
Tools: a request's `tools` reach the prompt (natively or through the fallback system turn) and the
answer's calls come back as `tool_calls`, streamed too (serving/tools.py).
"""

from rft_jax.serving.background import BackgroundServer
from rft_jax.serving.engine import Engine, EngineConfig, Request
from rft_jax.serving.reasoning import ThinkBudget
from rft_jax.serving.server import make_app

__all__ = ["BackgroundServer", "Engine", "EngineConfig", "Request", "ThinkBudget", "make_app"]
