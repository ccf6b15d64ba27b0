"""Model hyper-parameters: one frozen dataclass of shapes and switches for every family.

The families differ only in these switches (q/k/v bias, q/k RMSNorm, sliding
windows, post-norms, ...). How each family's `config.json` or GGUF metadata maps
onto them, and back, lives in the family's own file under `rft_jax/model/families/`.
"""

from __future__ import annotations

import dataclasses
from typing import Any


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
    # Gemma 3
    activation: str = "silu"  # silu | gelu_tanh: the MLP's gate activation
    embed_scale: bool = False  # embeddings times sqrt(hidden_size)
    post_norms: bool = False  # RMSNorm on each sublayer's output before the residual add
    query_pre_attn_scalar: float | None = None  # queries scaled by its inverse square root, not head_dim's
    rope_local_theta: float | None = None  # RoPE base of the sliding-window layers (the others: rope_theta)
    # Mistral, Gemma 3
    sliding_window: int | None = None  # tokens a sliding-window layer sees, itself included
    layer_types: tuple[str, ...] = ()  # per layer "sliding_attention" | "full_attention"; () = all alike
    # Mixture of experts (Qwen3-MoE, Mixtral): every layer's MLP is a router over experts when num_experts > 0
    num_experts: int = 0  # E
    experts_per_token: int = 0  # top-k
    moe_intermediate_size: int = 0  # each expert's F
    norm_topk_prob: bool = True  # renormalise the top-k router weights to sum to 1
    router_aux_loss_coef: float = 0.0  # the load-balancing loss's weight in training (0: off)

    def __post_init__(self):
        from rft_jax.model.families import FAMILIES  # noqa: PLC0415 (the families build ModelConfigs)

        if self.architecture not in FAMILIES:
            raise ModelConfigError(
                f"unknown architecture {self.architecture!r}; rft_jax supports {sorted(FAMILIES)} "
                f"(Hugging Face: {sorted(f.hf_class for f in FAMILIES.values())})"
            )
        if self.activation not in ("silu", "gelu_tanh"):
            raise ModelConfigError(f"activation {self.activation!r}: rft_jax has silu and gelu_tanh")
        if self.layer_types and len(self.layer_types) != self.num_layers:
            raise ModelConfigError(f"layer_types lists {len(self.layer_types)} layers, num_layers is {self.num_layers}")
        unknown = set(self.layer_types) - {"sliding_attention", "full_attention"}
        if unknown:
            raise ModelConfigError(f"layer_types {sorted(unknown)}: expected sliding_attention or full_attention")
        if self.num_heads % self.num_kv_heads:
            raise ModelConfigError(
                f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}"
            )
        if self.num_experts and not (0 < self.experts_per_token <= self.num_experts and self.moe_intermediate_size > 0):
            raise ModelConfigError(
                f"a mixture of {self.num_experts} experts needs 1 <= experts_per_token <= {self.num_experts} "
                f"(got {self.experts_per_token}) and moe_intermediate_size > 0 (got {self.moe_intermediate_size})"
            )

    @property
    def num_params(self) -> int:
        d, f, k = self.hidden_size, self.intermediate_size, self.head_dim
        attn = d * k * (self.num_heads * 2 + self.num_kv_heads * 2)
        mlp = 3 * d * f
        if self.num_experts:
            mlp = self.num_experts * 3 * d * self.moe_intermediate_size + d * self.num_experts
        norms = (4 if self.post_norms else 2) * d + (2 * k if self.qk_norm else 0)
        per_layer = attn + mlp + norms
        embed = self.vocab_size * d * (1 if self.tie_embeddings else 2)
        return self.num_layers * per_layer + embed + d


def config_from_hf(hf: dict[str, Any]) -> ModelConfig:
    """Builds a ModelConfig from the dict in a Hugging Face `config.json` (by the family that claims it)."""
    from rft_jax.model.families import family_of_hf  # noqa: PLC0415

    return family_of_hf(hf).config_from_hf(hf)


def config_from_gguf(meta: dict[str, Any], *, has_output_weight: bool) -> ModelConfig:
    """Builds a ModelConfig from GGUF key/values (`llama.block_count`, ...)."""
    from rft_jax.model.families import family_of_gguf  # noqa: PLC0415

    return family_of_gguf(meta).config_from_gguf(meta, has_output_weight=has_output_weight)


def config_to_hf(cfg: ModelConfig) -> dict:
    """The `config.json` transformers needs to load the model (by the family's own mapping)."""
    from rft_jax.model.families import family_of  # noqa: PLC0415

    return family_of(cfg).config_to_hf(cfg)
