"""Mistral: Llama with an optional sliding window on every layer (v0.1: 4096 tokens; later versions none).

llama.cpp converts Mistral checkpoints to GGUF under the `llama` architecture,
so a Mistral GGUF loads through the Llama family (its window is not in GGUF).
"""

from __future__ import annotations

from rft_jax.model.config import ModelConfig
from rft_jax.model.families.base import LLAMA_HF_LAYER, Family, dense_from_hf, dense_to_hf


def from_hf(hf: dict) -> ModelConfig:
    window = hf.get("sliding_window")
    return dense_from_hf(hf, "mistral", sliding_window=int(window) if window else None)


def to_hf(cfg: ModelConfig) -> dict:
    return dense_to_hf(cfg, FAMILY, sliding_window=cfg.sliding_window)


FAMILY = Family(
    name="mistral",
    hf_class="MistralForCausalLM",
    hf_layer=LLAMA_HF_LAYER,
    config_from_hf=from_hf,
    config_to_hf=to_hf,
)
