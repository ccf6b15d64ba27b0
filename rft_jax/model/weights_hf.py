"""Loading Hugging Face safetensors checkpoints (single file or sharded index)."""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from safetensors import safe_open

from rft_jax.model.config import ModelConfig, config_from_hf
from rft_jax.model.params import WeightsError, assemble_params, read_layers

_HF_PROJ = {
    "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
    "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj",
}
_HF_NORMS = {
    "attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm",
    "q_norm": "self_attn.q_norm", "k_norm": "self_attn.k_norm",
}


def read_hf_config(folder: Path) -> ModelConfig:
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no config.json; a Hugging Face model folder needs one")
    return config_from_hf(json.loads(path.read_text()))


def _safetensors_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise FileNotFoundError(f"{index}: shard files missing: {missing}")
        return [folder / s for s in shards]
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    raise FileNotFoundError(f"{folder}: no model.safetensors or model.safetensors.index.json")


def _read_all(files: list[Path]) -> dict[str, np.ndarray]:
    tensors = {}
    for path in files:
        with safe_open(str(path), framework="numpy") as f:
            for name in f.keys():
                try:
                    tensors[name] = f.get_tensor(name)
                except TypeError:  # bfloat16 has no numpy dtype in some safetensors builds

                    with safe_open(str(path), framework="pt") as ft:
                        tensors[name] = ft.get_tensor(name).float().numpy()
    return tensors


def load_hf_params(folder: str | Path, cfg: ModelConfig | None = None, dtype=jnp.float32) -> tuple[ModelConfig, dict]:
    folder = Path(folder)
    cfg = cfg or read_hf_config(folder)
    raw = _read_all(_safetensors_files(folder))

    def take(name):
        if name not in raw:
            raise WeightsError(f"{folder}: missing tensor {name!r}")
        return np.asarray(raw[name], np.float32)

    layers = read_layers(cfg, lambda i, ours: f"model.layers.{i}.{_HF_PROJ[ours]}",
                         lambda i, ours: f"model.layers.{i}.{_HF_NORMS[ours]}", take)
    top = {"embed": take("model.embed_tokens.weight"), "final_norm": take("model.norm.weight")}
    if not cfg.tie_embeddings:
        top["unembed"] = take("lm_head.weight").T
    return cfg, assemble_params(cfg, top, layers, dtype, source=str(folder))


def save_hf_params(folder: str | Path, cfg: ModelConfig, params: dict) -> None:
    """Writes params as HF-named safetensors (the inverse of `load_hf_params`)."""
    from safetensors.numpy import save_file  # noqa: PLC0415

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, np.ndarray] = {}
    layers = params["layers"]
    for i in range(cfg.num_layers):
        prefix = f"model.layers.{i}."
        for ours, theirs in _HF_PROJ.items():
            out[f"{prefix}{theirs}.weight"] = np.asarray(layers[ours]["w"][i], np.float32).T
            if "b" in layers[ours]:
                out[f"{prefix}{theirs}.bias"] = np.asarray(layers[ours]["b"][i], np.float32)
        for ours, theirs in _HF_NORMS.items():
            if ours in layers:
                out[f"{prefix}{theirs}.weight"] = np.asarray(layers[ours][i], np.float32)
    out["model.embed_tokens.weight"] = np.asarray(params["embed"], np.float32)
    out["model.norm.weight"] = np.asarray(params["final_norm"], np.float32)
    if "unembed" in params:
        out["lm_head.weight"] = np.asarray(params["unembed"], np.float32).T
    save_file({k: np.ascontiguousarray(v) for k, v in out.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
