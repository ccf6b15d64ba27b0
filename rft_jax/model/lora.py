"""LoRA adapters: a second small pytree beside the frozen base parameters.

With adapters the reference policy of GRPO is simply the base with `lora=None`,
so no second copy of the model is ever held. B starts at zero, so a fresh
adapter leaves the model unchanged.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from rft_jax.model.config import ModelConfig
from rft_jax.model.params import PROJECTIONS, projection_shapes
from rft_jax.model.weights_hf import EXPORT_DTYPES


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """Low-rank adapters W + (alpha / r) * A @ B on the chosen projections."""

    rank: int = 16
    """r: adapter rank."""
    alpha: float = 32.0
    """alpha: the update is scaled by alpha / r."""
    targets: tuple[str, ...] = PROJECTIONS
    """Projections that get adapters: any of q, k, v, o, gate, up, down."""

    def __post_init__(self):
        unknown = sorted(set(self.targets) - set(PROJECTIONS))
        if unknown:
            raise ValueError(f"unknown LoRA targets {unknown}; choose from {PROJECTIONS}")
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def check_targets(cfg: ModelConfig, targets: tuple[str, ...]) -> None:
    """Refuses adapters on projections the model lacks: a mixture of experts has no dense gate/up/down.

    Adapting every expert (E adapters per projection) is not built; attention adapters are.
    """
    missing = [t for t in targets if t not in projection_shapes(cfg)]
    if missing:
        raise ValueError(
            f"LoRA targets {missing}: {cfg.architecture} is a mixture of {cfg.num_experts} experts, whose MLP "
            "projections rft_jax does not adapt. Adapt attention only (--lora.targets q k v o) or train in full "
            "(--mode full)")


def init_lora(cfg: ModelConfig, lora_cfg: LoraConfig, key: jax.Array) -> dict:
    """A ~ U(-1/sqrt(in), 1/sqrt(in)), B = 0: PEFT's init (torch's kaiming_uniform_ with a = sqrt(5), whose
    bound is gain * sqrt(3 / in) with gain = sqrt(2 / (1 + a^2)) = sqrt(1/3))."""
    check_targets(cfg, lora_cfg.targets)
    shapes = projection_shapes(cfg)
    keys = jax.random.split(key, len(lora_cfg.targets))
    layers = {}
    for k, name in zip(keys, lora_cfg.targets):
        n_in, n_out = shapes[name]
        bound = 1.0 / np.sqrt(n_in)
        a = jax.random.uniform(k, (cfg.num_layers, n_in, lora_cfg.rank), jnp.float32, -bound, bound)
        layers[name] = {"a": a, "b": jnp.zeros((cfg.num_layers, lora_cfg.rank, n_out), jnp.float32)}
    return {"layers": layers}


def merge_lora(params: dict, lora: dict, scale: float) -> dict:
    """Base weights with the adapters folded in: W + scale * A @ B."""
    layers = dict(params["layers"])
    for name, ab in lora["layers"].items():
        w = layers[name]["w"]
        delta = jnp.einsum("ldr,lre->lde", ab["a"], ab["b"]) * scale
        layers[name] = {**layers[name], "w": (w.astype(jnp.float32) + delta).astype(w.dtype)}
    return {**params, "layers": layers}


_PEFT_MODULES = {
    "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
    "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj",
}


def save_peft_adapter(folder: str | Path, cfg: ModelConfig, lora: dict, lora_cfg: LoraConfig,
                      base_model: str = "", dtype: str = "float32") -> None:
    """Writes a PEFT-format adapter folder (adapter_config.json + adapter_model.safetensors), its factors in
    `dtype` (a name in weights_hf.EXPORT_DTYPES, as the merged model beside it)."""
    from safetensors.numpy import save_file  # noqa: PLC0415

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, ab in lora["layers"].items():
        a, b = (np.asarray(ab[x], np.float32).astype(EXPORT_DTYPES[dtype]) for x in ("a", "b"))
        for i in range(cfg.num_layers):
            prefix = f"base_model.model.model.layers.{i}.{_PEFT_MODULES[name]}"
            tensors[f"{prefix}.lora_A.weight"] = np.ascontiguousarray(a[i].T)  # [r, in]
            tensors[f"{prefix}.lora_B.weight"] = np.ascontiguousarray(b[i].T)  # [out, r]
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
        "r": lora_cfg.rank, "lora_alpha": lora_cfg.alpha, "lora_dropout": 0.0, "bias": "none",
        "target_modules": sorted(_PEFT_MODULES[t].split(".")[-1] for t in lora["layers"]),
        "fan_in_fan_out": False, "inference_mode": True,
    }
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))


def load_peft_adapter(folder: str | Path, cfg: ModelConfig) -> tuple[dict, LoraConfig]:
    """Reads a PEFT LoRA folder back into (lora pytree, LoraConfig)."""
    from safetensors.numpy import load_file  # noqa: PLC0415

    folder = Path(folder)
    meta = json.loads((folder / "adapter_config.json").read_text())
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    by_module = {v.split(".")[-1]: k for k, v in _PEFT_MODULES.items()}
    targets = tuple(by_module[m] for m in meta["target_modules"])
    check_targets(cfg, targets)
    layers = {}
    for name in targets:
        a, b = [], []
        for i in range(cfg.num_layers):
            prefix = f"base_model.model.model.layers.{i}.{_PEFT_MODULES[name]}"
            a.append(tensors[f"{prefix}.lora_A.weight"].T)
            b.append(tensors[f"{prefix}.lora_B.weight"].T)
        # float32 whatever the file holds (a bfloat16 export too), as init_lora makes them
        layers[name] = {"a": jnp.asarray(np.stack(a), jnp.float32), "b": jnp.asarray(np.stack(b), jnp.float32)}
    return {"layers": layers}, LoraConfig(rank=int(meta["r"]), alpha=float(meta["lora_alpha"]), targets=targets)
