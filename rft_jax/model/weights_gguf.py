"""Loading GGUF files: metadata, and tensors dequantized with the `gguf` package, a block of rows at a time.

The header comes from gguf_file.py (not `gguf.GGUFReader`, which holds ~160 MB for a tokenizer's
strings); tensor bytes are read with plain file reads of their range, so loading holds about one
layer beyond the params.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import ml_dtypes
import numpy as np

from rft_jax.model.config import ModelConfig, config_from_gguf
from rft_jax.model.families import family_of
from rft_jax.model.gguf_file import GGUFHeader, GGUFTensor, read_header
from rft_jax.model.params import WeightsError, assemble_params, read_layers
from rft_jax.model.placement import RowBlocks

SUPPORTED_QUANT_TYPES = (
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
    "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "MXFP4",
)
"""The types `gguf.quants.dequantize` (gguf 0.19.0) reads exactly as ggml's C reference does: every integer
and IQ type is checked against values ggml computed (tests/data/make_gguf_dequant_reference.py), MXFP4
against ml_dtypes' E2M1/E8M0. Left out: NVFP4 (no reference here to check it against), and the types no
weight file stores (Q8_1, Q8_K, I8-I64, F64)."""
_AS_STORED = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}  # cast once, when placed


@functools.lru_cache(maxsize=4)
def _header(path: str) -> GGUFHeader:
    return read_header(path)


def read_gguf_metadata(path: str | Path) -> dict[str, Any]:
    """All key/values of the file, decoded to Python values."""
    return dict(_header(str(path)).metadata)


def read_gguf_config(path: str | Path) -> ModelConfig:
    names = _header(str(path)).tensors
    return config_from_gguf(read_gguf_metadata(path), has_output_weight="output.weight" in names)


def _unpermute_qk(w_OxI: np.ndarray, heads: int) -> np.ndarray:
    """Undoes llama.cpp's interleaving of the rotary pairs in Llama q/k rows."""
    out, n_in = w_OxI.shape
    return w_OxI.reshape(heads, out // heads // 2, 2, n_in).swapaxes(1, 2).reshape(out, n_in)


def _check_types(tensors, path: str) -> None:
    """Refuses a file with a type we cannot read before anything is loaded, naming what to do."""
    bad = {t.tensor_type.name for t in tensors if t.tensor_type.name not in SUPPORTED_QUANT_TYPES}
    if bad:
        first = next(t.name for t in tensors if t.tensor_type.name in bad)
        raise WeightsError(
            f"{path}: tensor {first!r} uses quantization {', '.join(sorted(bad))}, which rft_jax does not read; "
            f"supported: {', '.join(SUPPORTED_QUANT_TYPES)}. Re-quantize the file (e.g. llama.cpp's "
            f"llama-quantize to Q8_0) or convert the model to safetensors."
        )


def _read_rows(tensor: GGUFTensor, path: str, r0: int, r1: int) -> np.ndarray:
    """Rows r0:r1 of the tensor's leading axis: float32, or as stored for F32/F16/BF16.

    GGUF quantizes along the innermost axis only, so a block of leading rows is one contiguous
    byte range, read here and dequantized on its own.
    """
    from gguf import quants  # noqa: PLC0415

    shape = tensor.shape
    start = tensor.n_bytes * r0 // shape[0]
    count = tensor.n_bytes * r1 // shape[0] - start
    raw = np.fromfile(path, np.uint8, count=count, offset=tensor.data_offset + start)
    if raw.size != count:
        raise WeightsError(f"{path}: truncated: tensor {tensor.name!r} ends past the end of the file; re-download it")
    out_shape = (r1 - r0, *shape[1:])
    qtype = tensor.tensor_type
    if qtype.name in _AS_STORED:
        return raw.view(_AS_STORED[qtype.name]).reshape(out_shape)
    return quants.dequantize(raw.reshape(-1, count // math.prod(out_shape[:-1])), qtype).reshape(out_shape)


def load_gguf_params(path: str | Path, cfg: ModelConfig | None = None, dtype=jnp.float32) -> tuple[ModelConfig, dict]:
    path = str(path)
    cfg = cfg or read_gguf_config(path)
    tensors = _header(path).tensors
    _check_types(tensors.values(), path)

    def tensor(name: str):
        if name not in tensors:
            raise WeightsError(f"{path}: missing tensor {name!r}")
        return tensors[name]

    def take(name: str) -> np.ndarray:
        t = tensor(name)
        return _read_rows(t, path, 0, t.shape[0])

    def blocks(name: str, transposed: bool = False) -> RowBlocks:
        t = tensor(name)
        return RowBlocks(t.shape, lambda r0, r1: _read_rows(t, path, r0, r1), transposed)

    heads = {"q": cfg.num_heads, "k": cfg.num_kv_heads}
    family = family_of(cfg)

    def unpermute(ours, w_OxI):
        return _unpermute_qk(w_OxI, heads[ours]) if family.gguf_permuted_qk and ours in heads else w_OxI

    layers = read_layers(cfg, lambda i, ours: f"blk.{i}.{family.gguf_layer[ours]}", take, unpermute)
    top = {"embed": blocks("token_embd.weight"), "final_norm": take("output_norm.weight")}
    if not cfg.tie_embeddings:
        top["unembed"] = blocks("output.weight", transposed=True)
    return cfg, assemble_params(cfg, top, layers, dtype, source=path)
