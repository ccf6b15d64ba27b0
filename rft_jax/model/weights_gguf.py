"""Loading GGUF files: metadata, and tensors dequantized to float32 with the `gguf` package."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from rft_jax.model.config import ModelConfig, config_from_gguf
from rft_jax.model.params import WeightsError, assemble_params, read_layers

SUPPORTED_QUANT_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K")

_GGUF_PROJ = {
    "q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output",
    "gate": "ffn_gate", "up": "ffn_up", "down": "ffn_down",
}
_GGUF_NORMS = {"attn_norm": "attn_norm", "mlp_norm": "ffn_norm", "q_norm": "attn_q_norm", "k_norm": "attn_k_norm"}


@functools.lru_cache(maxsize=4)
def _reader(path: str):
    import gguf  # noqa: PLC0415 (heavy import, only for GGUF files)

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    try:
        return gguf.GGUFReader(path)
    except Exception as err:  # the gguf package raises bare ValueErrors on corrupt files
        raise WeightsError(f"{path}: not a readable GGUF file ({err})") from err


def read_gguf_metadata(path: str | Path) -> dict[str, Any]:
    """All key/values of the file, decoded to Python values."""
    meta = {}
    for key, field in _reader(str(path)).fields.items():
        if key.startswith("GGUF."):
            continue
        try:
            meta[key] = field.contents()
        except Exception:  # noqa: BLE001 (an exotic field we never read)
            continue
    return meta


def read_gguf_config(path: str | Path) -> ModelConfig:
    names = {t.name for t in _reader(str(path)).tensors}
    return config_from_gguf(read_gguf_metadata(path), has_output_weight="output.weight" in names)


def _unpermute_qk(w_OxI: np.ndarray, heads: int) -> np.ndarray:
    """Undoes llama.cpp's interleaving of the rotary pairs in Llama q/k rows."""
    out, n_in = w_OxI.shape
    return w_OxI.reshape(heads, out // heads // 2, 2, n_in).swapaxes(1, 2).reshape(out, n_in)


def _dequantize(tensor, path) -> np.ndarray:
    from gguf import quants  # noqa: PLC0415

    qtype = tensor.tensor_type.name
    if qtype not in SUPPORTED_QUANT_TYPES:
        raise WeightsError(
            f"{path}: tensor {tensor.name!r} uses quantization {qtype}, which rft_jax does not read; "
            f"supported: {', '.join(SUPPORTED_QUANT_TYPES)}. Re-quantize the file (e.g. llama.cpp's "
            f"llama-quantize to Q8_0) or convert the model to safetensors."
        )
    data = np.asarray(quants.dequantize(tensor.data, tensor.tensor_type), np.float32)
    shape = tuple(int(s) for s in reversed(tensor.shape))  # GGUF lists dims innermost first
    return data.reshape(shape)


def load_gguf_params(path: str | Path, cfg: ModelConfig | None = None, dtype=jnp.float32) -> tuple[ModelConfig, dict]:
    path = str(path)
    cfg = cfg or read_gguf_config(path)
    tensors = {t.name: t for t in _reader(path).tensors}

    def take(name):
        if name not in tensors:
            raise WeightsError(f"{path}: missing tensor {name!r}")
        return _dequantize(tensors[name], path)

    heads = {"q": cfg.num_heads, "k": cfg.num_kv_heads}

    def unpermute(ours, w_OxI):
        return _unpermute_qk(w_OxI, heads[ours]) if cfg.architecture == "llama" and ours in heads else w_OxI

    layers = read_layers(cfg, lambda i, ours: f"blk.{i}.{_GGUF_PROJ[ours]}",
                         lambda i, ours: f"blk.{i}.{_GGUF_NORMS[ours]}", take, unpermute)
    top = {"embed": take("token_embd.weight"), "final_norm": take("output_norm.weight")}
    if not cfg.tie_embeddings:
        top["unembed"] = take("output.weight").T
    return cfg, assemble_params(cfg, top, layers, dtype, source=path)
