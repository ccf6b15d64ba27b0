"""What `--model` and `--adapter` name, turned into a ready engine and its tokenizer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rft_jax.serving.engine import Engine, EngineConfig


@dataclasses.dataclass(frozen=True)
class ServedModel:
    name: str
    engine: Engine  # not started
    tokenizer: object


def load_served_model(model: str | None, adapter: str | None = None, *, slots: int = 16,
                      max_context: int = 1024) -> ServedModel:
    """A registry key, HF folder (exported models included) or .gguf, optionally with a PEFT LoRA folder."""
    from rft_jax.model import DEFAULT_MODEL, load_model  # noqa: PLC0415
    from rft_jax.model.registry import default_param_dtype  # noqa: PLC0415
    from rft_jax.model.tokenizer import load_tokenizer  # noqa: PLC0415

    model = model or DEFAULT_MODEL
    dtype = default_param_dtype()
    cfg, params = load_model(model, dtype=dtype)
    tokenizer = load_tokenizer(model)
    lora, scale = None, 1.0
    if adapter:
        from rft_jax.serving.adapter import load_adapter  # noqa: PLC0415

        lora, scale = load_adapter(adapter, cfg, dtype=dtype)
    max_context = min(max_context, cfg.max_position_embeddings)
    engine = Engine(params, cfg, eos_ids=tokenizer.eos_ids, config=EngineConfig(slots=slots, max_context=max_context),
                    lora=lora, lora_scale=scale, dtype=dtype)
    name = Path(model).name if ("/" in model or model.endswith(".gguf")) else model
    if adapter:
        name = f"{name}+{Path(adapter).name}"
    return ServedModel(name, engine, tokenizer)
