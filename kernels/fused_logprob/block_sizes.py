"""Block sizes for the fused log-prob / entropy kernels.

One small frozen dataclass, with one default per implementation. There is no
table keyed on exact shapes: a shape that is not a multiple of a block is
handled by masking (Pallas) or by a smaller tail block (xla_chunked), so the
defaults work for every shape and only trade speed against memory.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Tile sizes; `vocab` is the one that bounds memory.

    Attributes:
      vocab: columns of the unembedding per block (Vb). The live logits tile is
        [tokens or N, vocab] float32, so this sets the peak memory.
      tokens: rows per block (Nb). `None` (xla_chunked only) means all N tokens
        in one block, i.e. the [N, vocab] tile.
      depth: slice of the model width D per inner matmul step (Pallas GPU only;
        Triton keeps a [tokens, depth] and a [depth, vocab] tile in registers;
        the TPU kernels take all of D in one MXU matmul).
      num_warps: Triton warps per program (Pallas GPU only).
      num_stages: Triton software-pipelining stages (Pallas GPU only).
    """

    vocab: int = 4096
    tokens: int | None = None
    depth: int = 64
    num_warps: int = 4
    num_stages: int = 2

    def __post_init__(self):
        # Validation only, no mutation, so the object holds what was passed: bad sizes fail at construction.
        for name in ("vocab", "depth", "num_warps", "num_stages"):
            if getattr(self, name) <= 0:
                raise ValueError(f"BlockSizes.{name} must be positive, got {self}")
        if self.tokens is not None and self.tokens <= 0:
            raise ValueError(f"BlockSizes.tokens must be positive or None: {self}")


# CPU / portable default: few, wide vocabulary blocks so that each step is one
# large matmul (XLA:CPU runs those near peak) while the [N, 4096] float32
# tile stays a small fraction of the [N, V] logits.
XLA_CHUNKED = BlockSizes(vocab=4096, tokens=None)

# GPU default (Triton): power-of-two tiles that fit registers/shared memory
# for D up to a few thousand. Untuned: chosen by the usual Triton matmul
# heuristics, not measured (no GPU was available when this was written).
PALLAS_GPU = BlockSizes(vocab=128, tokens=64, depth=64, num_warps=4,
                        num_stages=2)

# TPU default (Mosaic): MXU-friendly tiles, `tokens` a multiple of 16 (bf16
# sublanes) and `vocab` of 128 (lanes); 512 divides SmolLM2's 49,152 columns,
# so its unembedding is not padded. Untuned: never run on a TPU, only in the
# interpreter. Per step VMEM holds double-buffered [tokens, D] and [D, vocab]
# blocks plus a float32 [tokens, D] or [D, vocab] accumulator (backward), about
# 12 MiB for bf16 at D = 1,536, inside the 16 MiB default scoped VMEM; a much
# wider D needs smaller blocks.
PALLAS_TPU = BlockSizes(vocab=512, tokens=256)
