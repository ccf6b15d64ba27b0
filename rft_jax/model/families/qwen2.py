"""Qwen2 / Qwen2.5: Llama with a bias on the q, k and v projections."""

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
    return dense_from_hf(hf, "qwen2", qkv_bias=True)


def to_hf(cfg: ModelConfig) -> dict:
    return dense_to_hf(cfg, FAMILY)


def from_gguf(meta: dict, *, has_output_weight: bool) -> ModelConfig:
    return dense_from_gguf(meta, "qwen2", has_output_weight=has_output_weight, qkv_bias=True)


FAMILY = Family(
    name="qwen2",
    hf_class="Qwen2ForCausalLM",
    hf_layer=LLAMA_HF_LAYER,
    config_from_hf=from_hf,
    config_to_hf=to_hf,
    gguf_arch="qwen2",
    gguf_layer=LLAMA_GGUF_LAYER,
    config_from_gguf=from_gguf,
)
