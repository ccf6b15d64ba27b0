"""Gemma 3 (text): Llama's layout with Gemma's switches.

Sliding-window layers (5 of every 6 by default) with their own RoPE base,
RMSNorm on each head's queries and keys, a norm after each sublayer as well as
before it, embeddings scaled by sqrt(hidden_size), a tanh-GELU MLP, and queries
scaled by 1/sqrt(query_pre_attn_scalar). Hugging Face stores every RMSNorm
scale as w for y = x * (1 + w) (`hf_norm_shift`); llama.cpp's converter
stores 1 + w already, and does not permute q/k rows.

Read: `Gemma3ForCausalLM` folders (model_type `gemma3_text`: gemma-3-270m,
gemma-3-1b) and `gemma3` GGUF files. A multimodal `Gemma3ForConditionalGeneration`
folder (4B and up) is refused: its text weights sit under another prefix.
"""

from __future__ import annotations

from rft_jax.model.config import ModelConfig, ModelConfigError
from rft_jax.model.families.base import (
    LLAMA_GGUF_LAYER,
    LLAMA_HF_LAYER,
    Family,
    dense_from_gguf,
    dense_from_hf,
    dense_to_hf,
    rope_scaling_from_hf,
)

HF_LAYER = {**LLAMA_HF_LAYER, "attn_post_norm": "post_attention_layernorm", "mlp_norm": "pre_feedforward_layernorm",
            "mlp_post_norm": "post_feedforward_layernorm"}
GGUF_LAYER = {**LLAMA_GGUF_LAYER, "attn_post_norm": "post_attention_norm", "mlp_post_norm": "post_ffw_norm"}

# transformers' Gemma3TextConfig defaults, for keys a config.json may leave out.
HF_DEFAULTS = dict(head_dim=256, rms_norm_eps=1e-6, tie_word_embeddings=True, query_pre_attn_scalar=256,
                   sliding_window=4096, rope_theta=1_000_000.0, rope_local_base_freq=10_000.0,
                   max_position_embeddings=131_072, hidden_activation="gelu_pytorch_tanh")
SLIDING_PATTERN = 6  # every 6th layer is global: transformers' default and llama.cpp's fixed Gemma 3 pattern
ACTIVATIONS = {"gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh", "silu": "silu"}
SLIDING, FULL = "sliding_attention", "full_attention"


def pattern_layer_types(num_layers: int, pattern: int = SLIDING_PATTERN) -> tuple[str, ...]:
    """Gemma 3's layer kinds: every `pattern`-th layer global, the others sliding."""
    return tuple(SLIDING if (i + 1) % pattern else FULL for i in range(num_layers))


def _refuse_unsupported(hf: dict) -> None:
    """Switches Gemma 3 checkpoints leave off and rft_jax does not implement: an error, not a wrong model."""
    if (hf.get("architectures") or [None])[0] == "Gemma3ForConditionalGeneration" or "text_config" in hf:
        raise ModelConfigError(
            "Gemma3ForConditionalGeneration (multimodal Gemma 3, 4B and up) is not supported: rft_jax reads "
            "text-only Gemma3ForCausalLM folders (model_type gemma3_text, e.g. gemma-3-270m, gemma-3-1b) and "
            "gemma3 GGUF files. Convert the multimodal checkpoint to GGUF with llama.cpp, or save its language "
            "model alone with transformers."
        )
    for key in ("final_logit_softcapping", "attn_logit_softcapping"):
        if hf.get(key) is not None:
            raise ModelConfigError(f"Gemma 3 config sets {key}={hf[key]}; rft_jax implements no logit softcapping")
    if hf.get("use_bidirectional_attention"):
        raise ModelConfigError("use_bidirectional_attention=true (an embedding model): rft_jax runs causal LMs")
    if hf.get("attention_bias"):
        raise ModelConfigError("Gemma 3 config sets attention_bias=true (an o_proj bias): rft_jax has no such bias")


def _rope_from_hf(hf: dict) -> dict:
    """The global and local RoPE settings, from transformers 5's per-layer-kind `rope_parameters` or the
    older flat keys (`rope_theta`, `rope_local_base_freq`, `rope_scaling` of the global layers)."""
    params = hf.get("rope_parameters") or {}
    full, local = params.get(FULL) or {}, params.get(SLIDING) or {}
    if local.get("rope_type", "default") != "default":
        raise ModelConfigError(f"Gemma 3 sliding layers with rope_type {local['rope_type']!r}: rft_jax scales "
                               "only the global layers' RoPE")
    scaling = hf.get("rope_scaling") or (full if full.get("rope_type", "default") != "default" else None)
    return dict(rope_theta=float(full.get("rope_theta", hf["rope_theta"])),
                rope_local_theta=float(local.get("rope_theta", hf["rope_local_base_freq"])),
                rope_scaling=rope_scaling_from_hf(scaling))


def from_hf(hf: dict) -> ModelConfig:
    _refuse_unsupported(hf)
    hf = {**HF_DEFAULTS, **hf}
    act = hf.get("hidden_activation") or hf.get("hidden_act")
    if act not in ACTIVATIONS:
        raise ModelConfigError(f"Gemma 3 hidden_activation {act!r}: rft_jax has {sorted(ACTIVATIONS)}")
    layer_types = hf.get("layer_types") or pattern_layer_types(hf["num_hidden_layers"],
                                                               hf.get("sliding_window_pattern", SLIDING_PATTERN))
    window = hf.get("sliding_window")
    return dense_from_hf(
        {**hf, "rope_parameters": None, "rope_scaling": None}, "gemma3",
        **_rope_from_hf(hf), activation=ACTIVATIONS[act], embed_scale=True, post_norms=True, qk_norm=True,
        query_pre_attn_scalar=float(hf["query_pre_attn_scalar"]), sliding_window=int(window) if window else None,
        layer_types=tuple(layer_types),
    )


def _whole(x: float) -> int | float:
    """An int where the value is one: transformers' strict config checks `query_pre_attn_scalar: int`."""
    return int(x) if float(x).is_integer() else x


def to_hf(cfg: ModelConfig) -> dict:
    """A Gemma3ForCausalLM config.json, in the flat keys both transformers 4.5x and 5 read; the layer kinds
    as our model runs them (`attention.layer_windows`: no list means every layer alike)."""
    act = "gelu_pytorch_tanh" if cfg.activation == "gelu_tanh" else cfg.activation
    return dense_to_hf(
        cfg, FAMILY, model_type="gemma3_text", hidden_activation=act,
        query_pre_attn_scalar=_whole(cfg.query_pre_attn_scalar or cfg.head_dim), sliding_window=cfg.sliding_window,
        layer_types=list(cfg.layer_types) or [SLIDING if cfg.sliding_window else FULL] * cfg.num_layers,
        rope_local_base_freq=cfg.rope_local_theta or cfg.rope_theta, attention_bias=False,
        final_logit_softcapping=None, attn_logit_softcapping=None,
    )


def from_gguf(meta: dict, *, has_output_weight: bool) -> ModelConfig:
    """llama.cpp's reading of a `gemma3` GGUF: its fixed pattern and local base (src/llama-model.cpp), and
    its query scale, 1/sqrt(hidden/heads) for the 62-layer 27B and 1/sqrt(head_dim) otherwise."""
    for key in ("final_logit_softcapping", "attn_logit_softcapping"):
        if meta.get(f"gemma3.{key}") is not None:
            raise ModelConfigError(f"GGUF sets gemma3.{key}; rft_jax implements no logit softcapping")
    layers = int(meta["gemma3.block_count"])
    pattern = meta.get("gemma3.attention.sliding_window_pattern")
    if isinstance(pattern, (list, tuple)):  # per layer: true = sliding
        layer_types = tuple(SLIDING if s else FULL for s in pattern)
    else:
        layer_types = pattern_layer_types(layers, int(pattern or SLIDING_PATTERN))
    width, heads = int(meta["gemma3.embedding_length"]), int(meta["gemma3.attention.head_count"])
    head_dim = int(meta.get("gemma3.attention.key_length") or width // heads)
    return dense_from_gguf(
        meta, "gemma3", has_output_weight=has_output_weight, activation="gelu_tanh", embed_scale=True,
        post_norms=True, qk_norm=True, query_pre_attn_scalar=float(width // heads if layers == 62 else head_dim),
        sliding_window=int(meta["gemma3.attention.sliding_window"]), layer_types=layer_types,
        rope_local_theta=float(meta.get("gemma3.rope.freq_base_swa", 10_000.0)),
    )


FAMILY = Family(
    name="gemma3",
    hf_class="Gemma3ForCausalLM",
    hf_layer=HF_LAYER,
    config_from_hf=from_hf,
    config_to_hf=to_hf,
    gguf_arch="gemma3",
    gguf_layer=GGUF_LAYER,
    config_from_gguf=from_gguf,
    hf_norm_shift=1.0,
    hf_model_types=("gemma3_text",),
)
