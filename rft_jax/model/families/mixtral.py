"""Mixtral: Mistral's attention (an optional sliding window), and in every layer's MLP a router over E
SwiGLU experts whose top-k weights are always renormalised (`rft_jax.model.moe`).

Its experts are `w1` (gate), `w3` (up) and `w2` (down), each expert as wide as `intermediate_size`.
transformers' `router_jitter_noise` only perturbs routing in its own training mode; the model itself is
the same, so rft_jax reads such configs and trains without the noise. llama.cpp converts Mixtral to GGUF
under the `llama` architecture; the Llama family refuses those files (read the safetensors folder).
"""

from __future__ import annotations

from rft_jax.model.config import ModelConfig
from rft_jax.model.families.base import (
    LLAMA_HF_LAYER,
    Family,
    attention_names,
    dense_from_hf,
    dense_to_hf,
    router_aux_loss_from_hf,
    router_aux_loss_to_hf,
)

HF_LAYER = {
    **attention_names(LLAMA_HF_LAYER),
    "router": "block_sparse_moe.gate",
    "experts.gate": "block_sparse_moe.experts.{e}.w1",
    "experts.up": "block_sparse_moe.experts.{e}.w3",
    "experts.down": "block_sparse_moe.experts.{e}.w2",
}


def from_hf(hf: dict) -> ModelConfig:
    window = hf.get("sliding_window")
    return dense_from_hf(
        hf, "mixtral", sliding_window=int(window) if window else None,
        num_experts=int(hf.get("num_local_experts", hf.get("num_experts"))),
        experts_per_token=int(hf["num_experts_per_tok"]), moe_intermediate_size=int(hf["intermediate_size"]),
        norm_topk_prob=True, router_aux_loss_coef=router_aux_loss_from_hf(hf),
    )


def to_hf(cfg: ModelConfig) -> dict:
    return dense_to_hf(
        cfg, FAMILY, intermediate_size=cfg.moe_intermediate_size, num_local_experts=cfg.num_experts,
        num_experts_per_tok=cfg.experts_per_token, sliding_window=cfg.sliding_window, **router_aux_loss_to_hf(cfg),
    )


FAMILY = Family(
    name="mixtral",
    hf_class="MixtralForCausalLM",
    hf_layer=HF_LAYER,
    config_from_hf=from_hf,
    config_to_hf=to_hf,
)
