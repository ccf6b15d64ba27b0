"""What a model family is: its names in Hugging Face and GGUF files and its config mapping, both ways.

The mappings shared by every Llama-like family live here as functions; a
family file names its differences (extra switches, other tensor names) and
reuses the rest. Layer math lives in the model itself, driven by the
`ModelConfig` switches a family sets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from rft_jax.model.config import ModelConfig, ModelConfigError, RopeScaling

# Tensor names inside one decoder layer ("model.layers.{i}." in HF files, "blk.{i}." in GGUF ones), ours -> theirs.
LLAMA_HF_LAYER = {
    "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
    "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj",
    "attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm",
    "q_norm": "self_attn.q_norm", "k_norm": "self_attn.k_norm",
}
LLAMA_GGUF_LAYER = {
    "q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output",
    "gate": "ffn_gate", "up": "ffn_up", "down": "ffn_down",
    "attn_norm": "attn_norm", "mlp_norm": "ffn_norm", "q_norm": "attn_q_norm", "k_norm": "attn_k_norm",
}


def attention_names(layer: Mapping[str, str]) -> dict[str, str]:
    """A layer name map without its dense MLP (gate, up, down): a mixture-of-experts family adds its own."""
    return {ours: theirs for ours, theirs in layer.items() if ours not in ("gate", "up", "down")}


@dataclasses.dataclass(frozen=True)
class Family:
    """One architecture family: everything about it that is not layer math.

    The `config_*` functions map a file's config onto `ModelConfig` and back;
    `hf_layer` / `gguf_layer` name each of our per-layer tensors (see
    `params.layer_shapes`) in the two file formats.
    """

    name: str  # ModelConfig.architecture, and the HF model_type
    hf_class: str  # config.json "architectures"
    hf_layer: Mapping[str, str]
    config_from_hf: Callable[[dict], ModelConfig]
    config_to_hf: Callable[[ModelConfig], dict]
    gguf_arch: str | None = None  # GGUF general.architecture; None: this family is read from HF folders only
    gguf_layer: Mapping[str, str] = dataclasses.field(default_factory=dict)
    config_from_gguf: Callable[..., ModelConfig] | None = None
    gguf_permuted_qk: bool = False  # llama.cpp interleaves the rotary pairs of Llama q/k rows
    hf_norm_shift: float = 0.0  # HF stores RMSNorm scales as w - shift (Gemma: y = x * (1 + w)); we store w
    hf_model_types: tuple[str, ...] = ()  # other config.json model_types this family reads

    def hf_config_names(self) -> tuple[str, ...]:
        return (self.name, *self.hf_model_types)


def rope_scaling_from_hf(raw: dict | None) -> RopeScaling:
    if not raw:
        return RopeScaling()
    kind = raw.get("rope_type", raw.get("type", "default"))
    if kind not in ("default", "linear", "llama3", "yarn", "dynamic"):
        raise ModelConfigError(f"unsupported rope_scaling type {kind!r}")
    fields = {f.name for f in dataclasses.fields(RopeScaling)}
    kwargs = {k: v for k, v in raw.items() if k in fields}
    return RopeScaling(kind=kind, **kwargs)


def rope_scaling_to_hf(rs: RopeScaling) -> dict | None:
    if rs.kind == "default":
        return None
    out: dict[str, Any] = {"rope_type": rs.kind, "factor": rs.factor}
    if rs.kind == "llama3":
        out.update(low_freq_factor=rs.low_freq_factor, high_freq_factor=rs.high_freq_factor,
                   original_max_position_embeddings=rs.original_max_position_embeddings)
    if rs.kind == "yarn":
        out.update(beta_fast=rs.beta_fast, beta_slow=rs.beta_slow,
                   original_max_position_embeddings=rs.original_max_position_embeddings)
        if rs.attention_factor is not None:
            out["attention_factor"] = rs.attention_factor
    return out


def dense_from_hf(hf: dict[str, Any], architecture: str, **switches) -> ModelConfig:
    """The shapes every Llama-like config.json spells the same way, plus a family's `switches`."""
    heads = hf["num_attention_heads"]
    rope_params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or (rope_params if rope_params.get("rope_type", "default") != "default" else None)
    theta = hf.get("rope_theta", rope_params.get("rope_theta", 10000.0))
    kwargs = dict(
        architecture=architecture,
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
        rope_theta=float(theta),
        rope_scaling=rope_scaling_from_hf(scaling),
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        max_position_embeddings=hf.get("max_position_embeddings", 8192),
    )
    kwargs.update(switches)
    return ModelConfig(**kwargs)


def dense_to_hf(cfg: ModelConfig, family: Family, **extra) -> dict:
    """The config.json entries every Llama-like family spells the same way, plus `extra`."""
    out = {
        "architectures": [family.hf_class],
        "model_type": family.name,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "rope_theta": cfg.rope_theta,
        "rms_norm_eps": cfg.rms_norm_eps,
        "tie_word_embeddings": cfg.tie_embeddings,
        "max_position_embeddings": cfg.max_position_embeddings,
        "hidden_act": "silu" if cfg.activation == "silu" else "gelu_pytorch_tanh",
        "torch_dtype": "float32",
    }
    scaling = rope_scaling_to_hf(cfg.rope_scaling)
    if scaling is not None:
        out["rope_scaling"] = scaling
    out.update(extra)
    return out


def gguf_getter(meta: dict[str, Any], arch: str) -> Callable:
    """get(key, default) of `{arch}.{key}`, with an error that names the missing key."""
    def get(key, default=None):
        value = meta.get(f"{arch}.{key}", default)
        if value is None:
            raise ModelConfigError(f"GGUF metadata lacks {arch}.{key}")
        return value
    return get


def dense_from_gguf(meta: dict[str, Any], architecture: str, *, has_output_weight: bool, **switches) -> ModelConfig:
    """The shapes every Llama-like GGUF spells the same way (keys under general.architecture)."""
    arch = meta["general.architecture"]
    get = gguf_getter(meta, arch)
    if int(meta.get(f"{arch}.expert_count") or 0) and "num_experts" not in switches:
        raise ModelConfigError(
            f"this {arch!r} GGUF is a mixture of experts ({arch}.expert_count = {meta[f'{arch}.expert_count']}, "
            "e.g. Mixtral), which rft_jax reads from Hugging Face folders only: pass the model's safetensors folder"
        )
    heads = int(get("attention.head_count"))
    width = int(get("embedding_length"))
    vocab = meta.get(f"{arch}.vocab_size") or len(meta["tokenizer.ggml.tokens"])
    scaling = RopeScaling()
    if meta.get(f"{arch}.rope.scaling.type") == "linear":
        scaling = RopeScaling(kind="linear", factor=float(meta[f"{arch}.rope.scaling.factor"]))
    elif meta.get(f"{arch}.rope.scaling.type") == "yarn":
        scaling = RopeScaling(
            kind="yarn",
            factor=float(meta[f"{arch}.rope.scaling.factor"]),
            original_max_position_embeddings=int(meta[f"{arch}.rope.scaling.original_context_length"]),
        )
    kwargs = dict(
        architecture=architecture,
        vocab_size=int(vocab),
        hidden_size=width,
        intermediate_size=int(get("feed_forward_length")),
        num_layers=int(get("block_count")),
        num_heads=heads,
        num_kv_heads=int(get("attention.head_count_kv", heads)),
        head_dim=int(meta.get(f"{arch}.attention.key_length") or meta.get(f"{arch}.rope.dimension_count")
                     or width // heads),
        rope_theta=float(get("rope.freq_base", 10000.0)),
        rope_scaling=scaling,
        rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-6)),
        tie_embeddings=not has_output_weight,
        max_position_embeddings=int(get("context_length", 8192)),
    )
    kwargs.update(switches)
    return ModelConfig(**kwargs)


def router_aux_loss_from_hf(hf: dict[str, Any]) -> float:
    """The load-balancing loss's weight: transformers adds `router_aux_loss_coef` x that loss to the training
    loss only when the config sets `output_router_logits`, so rft_jax's GRPO step does the same."""
    return float(hf.get("router_aux_loss_coef", 0.001)) if hf.get("output_router_logits") else 0.0


def router_aux_loss_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    if not cfg.router_aux_loss_coef:
        return {"output_router_logits": False}
    return {"output_router_logits": True, "router_aux_loss_coef": cfg.router_aux_loss_coef}
