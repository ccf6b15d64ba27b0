"""Fused GRPO loss kernel. Entry point: `api.grpo_loss`; settings: `LossParams`; oracle: `reference.py`."""

from kernels.grpo_loss.api import IMPLEMENTATIONS, best_implementation, grpo_loss, grpo_token_loss
from kernels.grpo_loss.block_sizes import BlockSizes
from kernels.grpo_loss.params import LossParams

__all__ = ["IMPLEMENTATIONS", "BlockSizes", "LossParams", "best_implementation", "grpo_loss", "grpo_token_loss"]
