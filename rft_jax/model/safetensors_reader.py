"""A .safetensors reader that returns one tensor (or a block of its rows) at a time, as numpy.

Why our own: the `safetensors` package's numpy path cannot read bfloat16 in every release (the
old loader fell back to `import torch`, which only the test set-up installs), and reading a
checkpoint through it materialises whole tensors in float32. The format is simple: 8 bytes of
little-endian header length, a JSON header mapping each name to its dtype, shape and byte range,
then the raw bytes. Each read here is one `readinto` of that byte range into a fresh numpy array,
so the only memory held is the array returned (a memory map would leave every page it touched
resident, and counted in the process's RSS, until unmapped).
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from pathlib import Path

import ml_dtypes
import numpy as np

from rft_jax.model.params import WeightsError

DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_MAX_HEADER = 100 * 2**20  # the format's own limit; a larger length means the file is not safetensors


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: `start`/`end` are absolute byte offsets in `path`."""

    path: Path
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    start: int
    end: int


def _bad(path: Path, what: str) -> WeightsError:
    return WeightsError(f"{path}: {what}; the file is damaged or not safetensors: re-download or re-save it")


def read_header(path: str | Path) -> dict[str, TensorInfo]:
    """Every tensor's dtype, shape and byte range, checked against the file's size before any read."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _bad(path, f"truncated: {size} bytes, shorter than the 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER or 8 + n > size:
            raise _bad(path, f"truncated or bad header: header length {n}, file size {size} bytes")
        try:
            raw = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise _bad(path, f"header is not JSON ({err})") from err
    if not isinstance(raw, dict):
        raise _bad(path, "header is not a JSON object")
    raw.pop("__metadata__", None)
    return {name: _entry(path, name, spec, 8 + n, size) for name, spec in raw.items()}


def _entry(path: Path, name: str, spec, data_start: int, size: int) -> TensorInfo:
    """One header entry as a TensorInfo, with its dtype known and its bytes inside the file."""
    try:
        code, shape, (begin, end) = spec["dtype"], tuple(int(s) for s in spec["shape"]), spec["data_offsets"]
    except (KeyError, TypeError, ValueError) as err:
        raise _bad(path, f"header entry {name!r} lacks dtype/shape/data_offsets ({err})") from err
    if code not in DTYPES:
        raise WeightsError(
            f"{path}: tensor {name!r} has dtype {code}, which rft_jax does not read (it reads "
            f"{', '.join(DTYPES)}); convert the checkpoint to bfloat16 or float32, e.g. with transformers' "
            f"save_pretrained after loading it with torch_dtype=torch.bfloat16"
        )
    dtype = DTYPES[code]
    if end - begin != math.prod(shape) * dtype.itemsize or begin < 0:
        raise _bad(path, f"tensor {name!r}: {end - begin} bytes for shape {shape} of {code}")
    if data_start + end > size:
        raise _bad(path, f"truncated: tensor {name!r} ends at byte {data_start + end}, the file has {size}")
    return TensorInfo(path, name, dtype, shape, data_start + begin, data_start + end)


def read_tensor(info: TensorInfo) -> np.ndarray:
    """The whole tensor, in its stored dtype."""
    return read_rows(info, 0, info.shape[0] if info.shape else 1).reshape(info.shape)


def read_rows(info: TensorInfo, r0: int, r1: int) -> np.ndarray:
    """Rows r0:r1 of the tensor (its leading axis), in its stored dtype: one read of their byte range."""
    row_shape = info.shape[1:]
    row_bytes = math.prod(row_shape) * info.dtype.itemsize
    out = np.empty((r1 - r0, *row_shape), info.dtype)
    with open(info.path, "rb") as f:
        f.seek(info.start + r0 * row_bytes)
        got = f.readinto(memoryview(out.reshape(-1).view(np.uint8)))
    if got != out.nbytes:
        raise _bad(info.path, f"truncated: tensor {info.name!r} ended after {got} of {out.nbytes} bytes")
    return out


def checkpoint_index(files: list[Path]) -> dict[str, TensorInfo]:
    """Tensor name -> where it lives, over every file of a (possibly sharded) checkpoint."""
    index: dict[str, TensorInfo] = {}
    for path in files:
        for name, info in read_header(path).items():
            if name in index:
                raise WeightsError(f"tensor {name!r} is in both {index[name].path} and {path}; remove the stale shard")
            index[name] = info
    return index
