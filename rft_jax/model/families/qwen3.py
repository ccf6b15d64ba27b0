"""Qwen3: Llama with an RMSNorm on each head's queries and keys before RoPE."""

from __future__ import annotations

from rft_jax.model.config import ModelConfig
from rft_jax.model.families.base import (
    LLAMA_GGUF_LAYER,
    LLAMA_HF_LAYER,
    Family,
    dense_from_gguf,
    dense_from_hf,
    dense_to_hf,
)


def from_hf(hf: dict) -> ModelConfig:
    return dense_from_hf(hf, "qwen3", qk_norm=True, qkv_bias=bool(hf.get("attention_bias", False)))


def to_hf(cfg: ModelConfig) -> dict:
    return dense_to_hf(cfg, FAMILY, attention_bias=cfg.qkv_bias)


def from_gguf(meta: dict, *, has_output_weight: bool) -> ModelConfig:
    return dense_from_gguf(meta, "qwen3", has_output_weight=has_output_weight, qk_norm=True)


FAMILY = Family(
    name="qwen3",
    hf_class="Qwen3ForCausalLM",
    hf_layer=LLAMA_HF_LAYER,
    config_from_hf=from_hf,
    config_to_hf=to_hf,
    gguf_arch="qwen3",
    gguf_layer=LLAMA_GGUF_LAYER,
    config_from_gguf=from_gguf,
)
