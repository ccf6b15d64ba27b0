"""A lean GGUF header reader: the metadata as Python values and where each tensor's bytes are.

Why not `gguf.GGUFReader`: it keeps a numpy view per metadata element, and a tokenizer's 50-260k
strings cost it about 160 MB of host memory for the life of the reader (measured on SmolLM2-135M,
whose weights are 257 MB in bfloat16), more than the layer-by-layer loader itself holds. This reads
the same header (GGUF v2/v3: magic, counts, key/values, tensor infos) with one pass over a memory
map that is closed before returning; tensor bytes are read later, a block of rows at a time
(weights_gguf.py). Values equal what `GGUFReader.fields[key].contents()` returns.
"""

from __future__ import annotations

import dataclasses
import math
import mmap
import struct
from pathlib import Path
from typing import Any

import numpy as np

from rft_jax.model.params import WeightsError

MAGIC = b"GGUF"
# GGUF value types -> struct format of one scalar (8: string, 9: array are handled apart).
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8", 12: "<f8"}


@dataclasses.dataclass(frozen=True)
class GGUFTensor:
    """One tensor's header entry; `shape` is in numpy order (GGUF lists dims innermost first)."""

    name: str
    tensor_type: Any  # gguf.GGMLQuantizationType
    shape: tuple[int, ...]
    n_bytes: int
    data_offset: int  # absolute, in bytes from the start of the file


@dataclasses.dataclass(frozen=True)
class GGUFHeader:
    metadata: dict[str, Any]
    tensors: dict[str, GGUFTensor]


class _Cursor:
    """Sequential little-endian reads over a buffer, with a clear error past its end."""

    def __init__(self, buf, path: Path):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise WeightsError(f"{self.path}: truncated GGUF header (needs byte {self.pos + size}, the file has "
                               f"{len(self.buf)}); re-download the file")
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        n = self.take("<Q")
        raw = bytes(self.buf[self.pos:self.pos + n])
        if len(raw) != n:
            raise WeightsError(f"{self.path}: truncated GGUF header in a string; re-download the file")
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def value(self, vtype: int):
        if vtype == 8:
            return self.string()
        if vtype == 9:
            return self.array()
        if vtype not in _SCALARS:
            raise WeightsError(f"{self.path}: unknown GGUF value type {vtype}; the file is damaged or newer than rft_jax")
        return self.take(_SCALARS[vtype])

    def array(self) -> list:
        itype, n = self.take("<I"), self.take("<Q")
        if itype in _NUMPY:  # one read for the whole array, as GGUFReader's contents() lists it
            dtype = np.dtype(_NUMPY[itype])
            end = self.pos + n * dtype.itemsize
            if end > len(self.buf):
                raise WeightsError(f"{self.path}: truncated GGUF header in an array; re-download the file")
            out = np.frombuffer(self.buf, dtype, count=n, offset=self.pos).tolist()
            self.pos = end
            return out
        return [self.value(itype) for _ in range(n)]


def read_header(path: str | Path) -> GGUFHeader:
    """Metadata and tensor table of a GGUF file, with an actionable error for a damaged one."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    with open(path, "rb") as f:
        size = path.stat().st_size
        if size < 24 or f.read(4) != MAGIC:
            raise WeightsError(f"{path}: not a GGUF file (no GGUF magic); check the path or re-download it")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            cur = _Cursor(buf, path)
            cur.pos = 4
            version = cur.take("<I")
            if version not in (2, 3):
                raise WeightsError(f"{path}: GGUF version {version}; rft_jax reads versions 2 and 3 (little-endian)")
            n_tensors, n_kv = cur.take("<Q"), cur.take("<Q")
            metadata = {}
            for _ in range(n_kv):
                key = cur.string()
                metadata[key] = cur.value(cur.take("<I"))
            infos = []
            for _ in range(n_tensors):
                name = cur.string()
                dims = [cur.take("<Q") for _ in range(cur.take("<I"))]
                infos.append((name, dims, cur.take("<I"), cur.take("<Q")))
            align = int(metadata.get("general.alignment", 32))
            data_start = -(-cur.pos // align) * align
    tensors = {}
    for name, dims, code, offset in infos:
        try:
            qtype = GGMLQuantizationType(code)
        except ValueError as err:
            raise WeightsError(f"{path}: tensor {name!r} has GGML type {code}, unknown to gguf; update rft_jax") from err
        block, type_size = GGML_QUANT_SIZES[qtype]
        n_bytes = math.prod(dims) * type_size // block
        if data_start + offset + n_bytes > size:
            raise WeightsError(f"{path}: truncated: tensor {name!r} ends at byte {data_start + offset + n_bytes}, "
                               f"the file has {size}; re-download it")
        tensors[name] = GGUFTensor(name, qtype, tuple(reversed(dims)), n_bytes, data_start + offset)
    return GGUFHeader(metadata, tensors)
