"""Tile sizes of the fused GRPO-loss backends; static, hashable, never keyed on exact shapes."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Tokens per step of each backend. Inputs are padded up to a multiple."""

    chunk_n: int = 65536
    """xla_chunked: tokens per `lax.map` step (bounds the live f32 temporaries)."""
    pallas_block_n: int = 1024
    """pallas_gpu: tokens per program; a power of 2 (Triton requirement)."""

    def __post_init__(self):
        if self.chunk_n < 1 or self.pallas_block_n < 1 or self.pallas_block_n & (self.pallas_block_n - 1):
            raise ValueError(f"bad block sizes {self}: need positive sizes, pallas_block_n a power of 2")
