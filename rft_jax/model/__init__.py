"""The Llama-family model: config, parameters, forward, weights and tokenizer."""

from rft_jax.model.config import ModelConfig, ModelConfigError
from rft_jax.model.params import WeightsError, init_params
from rft_jax.model.registry import DEFAULT_MODEL, load_config, load_model, resolve_model_path
from rft_jax.model.transformer import KV, branch_forward, logits, sequence_forward, unembed_matrix

__all__ = [
    "DEFAULT_MODEL", "KV", "ModelConfig", "ModelConfigError", "WeightsError", "branch_forward", "init_params",
    "load_config", "load_model", "logits", "resolve_model_path", "sequence_forward", "unembed_matrix",
]
