"""The model families rft_jax builds, one file each (see docs/model_families.md to add one)."""

from __future__ import annotations

from typing import Any

from rft_jax.model.config import ModelConfig, ModelConfigError
from rft_jax.model.families import gemma3, llama, mistral, mixtral, qwen2, qwen3, qwen3_moe
from rft_jax.model.families.base import Family

FAMILIES: dict[str, Family] = {f.name: f for f in (llama.FAMILY, qwen2.FAMILY, qwen3.FAMILY, mistral.FAMILY,
                                                gemma3.FAMILY, qwen3_moe.FAMILY, mixtral.FAMILY)}


def family_of(cfg: ModelConfig) -> Family:
    return FAMILIES[cfg.architecture]


def family_of_hf(hf: dict[str, Any]) -> Family:
    """The family a config.json names, by its `architectures` class first, then its `model_type`."""
    archs = hf.get("architectures") or []
    model_type = hf.get("model_type")
    for family in FAMILIES.values():
        if archs and archs[0] == family.hf_class:
            return family
    for family in FAMILIES.values():
        if model_type in family.hf_config_names():
            return family
    raise ModelConfigError(
        f"unknown architecture (architectures={archs}, model_type={model_type!r}); "
        f"rft_jax supports {sorted(f.hf_class for f in FAMILIES.values())}"
    )


def family_of_gguf(meta: dict[str, Any]) -> Family:
    arch = meta.get("general.architecture")
    for family in FAMILIES.values():
        if family.gguf_arch == arch and family.config_from_gguf is not None:
            return family
    readable = sorted(f.gguf_arch for f in FAMILIES.values() if f.gguf_arch)
    raise ModelConfigError(f"unknown GGUF architecture {arch!r}; rft_jax reads {readable}")


SUPPORTED_ARCHITECTURES = {name: f.hf_class for name, f in FAMILIES.items()}
