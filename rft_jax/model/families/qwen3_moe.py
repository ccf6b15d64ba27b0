"""Qwen3-MoE (Qwen3-30B-A3B, Qwen3-235B-A22B): Qwen3's attention, and a router over E SwiGLU experts in
every layer's MLP (`rft_jax.model.moe`).

transformers can also keep some layers dense (`mlp_only_layers`, `decoder_sparse_step`); no released
Qwen3-MoE does, and rft_jax refuses such configs rather than build a different model.
"""

from __future__ import annotations

from rft_jax.model.config import ModelConfig, ModelConfigError
from rft_jax.model.families.base import (
    LLAMA_GGUF_LAYER,
    LLAMA_HF_LAYER,
    Family,
    attention_names,
    dense_from_gguf,
    dense_from_hf,
    dense_to_hf,
    gguf_getter,
    router_aux_loss_from_hf,
    router_aux_loss_to_hf,
)

HF_LAYER = {
    **attention_names(LLAMA_HF_LAYER),
    "router": "mlp.gate",
    "experts.gate": "mlp.experts.{e}.gate_proj",
    "experts.up": "mlp.experts.{e}.up_proj",
    "experts.down": "mlp.experts.{e}.down_proj",
}
GGUF_LAYER = {
    **attention_names(LLAMA_GGUF_LAYER),
    "router": "ffn_gate_inp",
    "experts.gate": "ffn_gate_exps",
    "experts.up": "ffn_up_exps",
    "experts.down": "ffn_down_exps",
}


def _refuse_partly_dense(hf: dict) -> None:
    if not hf.get("num_experts", hf.get("num_local_experts")):
        raise ModelConfigError("qwen3_moe with num_experts = 0 is a dense model: rft_jax builds Qwen3-MoE models "
                               "whose every layer is a mixture of experts (a dense Qwen3 is Qwen3ForCausalLM)")
    if hf.get("mlp_only_layers"):
        raise ModelConfigError(f"qwen3_moe with dense layers (mlp_only_layers={hf['mlp_only_layers']}): rft_jax "
                               "builds Qwen3-MoE models whose every layer is a mixture of experts")
    if hf.get("decoder_sparse_step", 1) != 1:
        raise ModelConfigError(f"qwen3_moe with decoder_sparse_step={hf['decoder_sparse_step']} (only every "
                               "n-th layer sparse): rft_jax builds Qwen3-MoE models whose every layer is sparse")
    if hf.get("shared_expert_intermediate_size"):
        raise ModelConfigError("qwen3_moe with a shared expert (shared_expert_intermediate_size): rft_jax's "
                               "mixture of experts has routed experts only")


def from_hf(hf: dict) -> ModelConfig:
    _refuse_partly_dense(hf)
    experts = hf.get("num_experts", hf.get("num_local_experts"))
    window = hf.get("sliding_window") if hf.get("use_sliding_window") else None
    return dense_from_hf(
        hf, "qwen3_moe", qk_norm=True, qkv_bias=bool(hf.get("attention_bias", False)),
        sliding_window=int(window) if window else None,
        num_experts=int(experts), experts_per_token=int(hf["num_experts_per_tok"]),
        moe_intermediate_size=int(hf["moe_intermediate_size"]), norm_topk_prob=bool(hf.get("norm_topk_prob", False)),
        router_aux_loss_coef=router_aux_loss_from_hf(hf),
    )


def to_hf(cfg: ModelConfig) -> dict:
    return dense_to_hf(
        cfg, FAMILY, attention_bias=cfg.qkv_bias, num_experts=cfg.num_experts,
        num_experts_per_tok=cfg.experts_per_token, moe_intermediate_size=cfg.moe_intermediate_size,
        norm_topk_prob=cfg.norm_topk_prob, decoder_sparse_step=1, mlp_only_layers=[],
        use_sliding_window=cfg.sliding_window is not None, sliding_window=cfg.sliding_window,
        **router_aux_loss_to_hf(cfg),
    )


def from_gguf(meta: dict, *, has_output_weight: bool) -> ModelConfig:
    """llama.cpp's `qwen3moe`: it always renormalises the top-k weights (every released Qwen3-MoE does)."""
    get = gguf_getter(meta, meta["general.architecture"])
    return dense_from_gguf(
        meta, "qwen3_moe", has_output_weight=has_output_weight, qk_norm=True,
        num_experts=int(get("expert_count")), experts_per_token=int(get("expert_used_count")),
        moe_intermediate_size=int(get("expert_feed_forward_length")),
        norm_topk_prob=bool(get("expert_weights_norm", True)),
    )


FAMILY = Family(
    name="qwen3_moe",
    hf_class="Qwen3MoeForCausalLM",
    hf_layer=HF_LAYER,
    config_from_hf=from_hf,
    config_to_hf=to_hf,
    gguf_arch="qwen3moe",
    gguf_layer=GGUF_LAYER,
    config_from_gguf=from_gguf,
)
