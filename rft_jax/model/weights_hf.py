"""Loading Hugging Face safetensors checkpoints (single file or sharded index)."""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import ml_dtypes
import numpy as np

from rft_jax.model.config import ModelConfig, config_from_hf
from rft_jax.model.families import family_of
from rft_jax.model.params import WeightsError, assemble_params, layer_shapes, read_layers, tensor_kind
from rft_jax.model.placement import RowBlocks
from rft_jax.model.safetensors_reader import TensorInfo, checkpoint_index, read_rows, read_tensor


def _layer_name(family):
    """HF's name of our tensor `ours` in layer i (without `.weight`/`.bias`), by the family's map."""
    return lambda i, ours: f"model.layers.{i}.{family.hf_layer[ours]}"


def read_hf_config(folder: Path) -> ModelConfig:
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no config.json; a Hugging Face model folder needs one")
    return config_from_hf(json.loads(path.read_text()))


def _safetensors_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map")
        if not isinstance(weight_map, dict):
            raise WeightsError(f"{index}: no weight_map; re-save the checkpoint (save_pretrained writes one)")
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise FileNotFoundError(f"{index}: shard files missing: {missing}")
        return [folder / s for s in shards]
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    raise FileNotFoundError(f"{folder}: no model.safetensors or model.safetensors.index.json")


def load_hf_params(folder: str | Path, cfg: ModelConfig | None = None, dtype=jnp.float32) -> tuple[ModelConfig, dict]:
    folder = Path(folder)
    cfg = cfg or read_hf_config(folder)
    index = checkpoint_index(_safetensors_files(folder))  # headers only; tensors are read as placed

    def info(name: str) -> TensorInfo:
        if name not in index:
            raise WeightsError(f"{folder}: missing tensor {name!r}")
        return index[name]

    def take(name: str) -> np.ndarray:
        return read_tensor(info(name))

    def blocks(name: str, transposed: bool = False) -> RowBlocks:
        t = info(name)
        return RowBlocks(t.shape, lambda r0, r1: read_rows(t, r0, r1), transposed)

    family = family_of(cfg)
    layers = read_layers(cfg, _layer_name(family), take, norm_shift=family.hf_norm_shift)
    top = {"embed": blocks("model.embed_tokens.weight"), "final_norm": take("model.norm.weight") + np.float32(family.hf_norm_shift)}
    if not cfg.tie_embeddings:
        top["unembed"] = blocks("lm_head.weight", transposed=True)
    return cfg, assemble_params(cfg, top, layers, dtype, source=str(folder))


def _leaf(tree: dict, key: str):
    """The stacked array of a `layer_shapes` key in the nested layers pytree ("experts.up.w" -> [up][w])."""
    for part in key.split("."):
        tree = tree[part]
    return tree


EXPORT_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}
"""The dtypes an export's tensors are written in, by their config.json name (`torch_dtype`)."""


def save_hf_params(folder: str | Path, cfg: ModelConfig, params: dict, dtype: str = "float32") -> None:
    """Writes params as HF-named safetensors (the inverse of `load_hf_params`), in `dtype` (EXPORT_DTYPES).

    Every value is computed in float32 and rounded once at the end, so a bfloat16
    export is the float32 one rounded (half the bytes, as most Hub checkpoints).
    """
    from safetensors.numpy import save_file  # noqa: PLC0415

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, np.ndarray] = {}
    layers = params["layers"]
    family = family_of(cfg)
    name_of, shift = _layer_name(family), np.float32(family.hf_norm_shift)
    for i in range(cfg.num_layers):
        for key in layer_shapes(cfg):
            ours, kind = tensor_kind(key)
            value = np.asarray(_leaf(layers, key)[i], np.float32)
            if ours.startswith("experts."):  # [E, in, out] -> one [out, in] tensor per expert
                out.update({f"{name_of(i, ours).format(e=e)}.weight": w.T for e, w in enumerate(value)})
            elif kind == "w":
                out[f"{name_of(i, ours)}.weight"] = value.T
            elif kind == "b":
                out[f"{name_of(i, ours)}.bias"] = value
            else:
                out[f"{name_of(i, ours)}.weight"] = value - shift
    out["model.embed_tokens.weight"] = np.asarray(params["embed"], np.float32)
    out["model.norm.weight"] = np.asarray(params["final_norm"], np.float32) - shift
    if "unembed" in params:
        out["lm_head.weight"] = np.asarray(params["unembed"], np.float32).T
    store = EXPORT_DTYPES[dtype]
    save_file({k: np.ascontiguousarray(v.astype(store)) for k, v in out.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
