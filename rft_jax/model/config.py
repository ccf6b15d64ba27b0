"""Model hyper-parameters, read from a Hugging Face `config.json` or GGUF metadata.

One frozen dataclass covers Llama/SmolLM2, Qwen2 (q/k/v bias) and Qwen3 (q/k
RMSNorm): the architectures differ only in these switches.
"""

from __future__ import annotations

import dataclasses
from typing import Any

SUPPORTED_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}


class ModelConfigError(ValueError):
    """A config that rft_jax cannot build a model from."""


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling as Hugging Face configs spell it (`rope_scaling`)."""

    kind: str = "default"  # default | linear | llama3 | yarn | dynamic
    factor: float = 1.0
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0  # llama3
    original_max_position_embeddings: int = 8192  # llama3, yarn
    beta_fast: float = 32.0  # yarn
    beta_slow: float = 1.0  # yarn
    attention_factor: float | None = None  # yarn


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shapes and switches of a Llama-family decoder."""

    architecture: str = "llama"
    vocab_size: int = 49152
    hidden_size: int = 576  # D
    intermediate_size: int = 1536  # F
    num_layers: int = 30  # L
    num_heads: int = 9  # H
    num_kv_heads: int = 3  # J
    head_dim: int = 64  # K
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling = RopeScaling()
    rms_norm_eps: float = 1e-5
    tie_embeddings: bool = True
    qkv_bias: bool = False  # Qwen2
    qk_norm: bool = False  # Qwen3
    max_position_embeddings: int = 8192

    def __post_init__(self):
        if self.architecture not in SUPPORTED_ARCHITECTURES:
            raise ModelConfigError(
                f"unknown architecture {self.architecture!r}; rft_jax supports "
                f"{sorted(SUPPORTED_ARCHITECTURES)} (Hugging Face: {sorted(SUPPORTED_ARCHITECTURES.values())})"
            )
        if self.num_heads % self.num_kv_heads:
            raise ModelConfigError(
                f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}"
            )

    @property
    def num_params(self) -> int:
        d, f, k = self.hidden_size, self.intermediate_size, self.head_dim
        attn = d * k * (self.num_heads * 2 + self.num_kv_heads * 2)
        per_layer = attn + 3 * d * f + 2 * d
        embed = self.vocab_size * d * (1 if self.tie_embeddings else 2)
        return self.num_layers * per_layer + embed + d


def _rope_scaling_from_hf(raw: dict | None) -> RopeScaling:
    if not raw:
        return RopeScaling()
    kind = raw.get("rope_type", raw.get("type", "default"))
    if kind not in ("default", "linear", "llama3", "yarn", "dynamic"):
        raise ModelConfigError(f"unsupported rope_scaling type {kind!r}")
    fields = {f.name for f in dataclasses.fields(RopeScaling)}
    kwargs = {k: v for k, v in raw.items() if k in fields}
    return RopeScaling(kind=kind, **kwargs)


def config_from_hf(hf: dict[str, Any]) -> ModelConfig:
    """Builds a ModelConfig from the dict in a Hugging Face `config.json`."""
    archs = hf.get("architectures") or []
    by_class = {v: k for k, v in SUPPORTED_ARCHITECTURES.items()}
    model_type = hf.get("model_type")
    arch = by_class.get(archs[0]) if archs else None
    arch = arch or (model_type if model_type in SUPPORTED_ARCHITECTURES else None)
    if arch is None:
        raise ModelConfigError(
            f"unknown architecture (architectures={archs}, model_type={model_type!r}); "
            f"rft_jax supports {sorted(SUPPORTED_ARCHITECTURES.values())}"
        )
    heads = hf["num_attention_heads"]
    rope_params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or (rope_params if rope_params.get("rope_type", "default") != "default" else None)
    theta = hf.get("rope_theta", rope_params.get("rope_theta", 10000.0))
    return ModelConfig(
        architecture=arch,
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
        rope_theta=float(theta),
        rope_scaling=_rope_scaling_from_hf(scaling),
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        qkv_bias=arch == "qwen2" or bool(hf.get("attention_bias", False)),
        qk_norm=arch == "qwen3",
        max_position_embeddings=hf.get("max_position_embeddings", 8192),
    )


def config_from_gguf(meta: dict[str, Any], *, has_output_weight: bool) -> ModelConfig:
    """Builds a ModelConfig from GGUF key/values (`llama.block_count`, ...)."""
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ModelConfigError(
            f"unknown GGUF architecture {arch!r}; rft_jax supports {sorted(SUPPORTED_ARCHITECTURES)}"
        )

    def get(key, default=None):
        value = meta.get(f"{arch}.{key}", default)
        if value is None:
            raise ModelConfigError(f"GGUF metadata lacks {arch}.{key}")
        return value

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
    return ModelConfig(
        architecture=arch,
        vocab_size=int(vocab),
        hidden_size=width,
        intermediate_size=int(get("feed_forward_length")),
        num_layers=int(get("block_count")),
        num_heads=heads,
        num_kv_heads=int(get("attention.head_count_kv", heads)),
        head_dim=int(meta.get(f"{arch}.attention.key_length") or meta.get(f"{arch}.rope.dimension_count") or width // heads),
        rope_theta=float(get("rope.freq_base", 10000.0)),
        rope_scaling=scaling,
        rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-6)),
        tie_embeddings=not has_output_weight,
        qkv_bias=arch == "qwen2",
        qk_norm=arch == "qwen3",
        max_position_embeddings=int(get("context_length", 8192)),
    )
