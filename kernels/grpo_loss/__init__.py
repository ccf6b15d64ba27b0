"""Fused GRPO loss kernel (issue 4). Entry point: `api.grpo_loss`; oracle: `reference.py`."""

from kernels.grpo_loss.api import IMPLEMENTATIONS, best_implementation, grpo_loss, grpo_token_loss
from kernels.grpo_loss.block_sizes import BlockSizes

__all__ = ["IMPLEMENTATIONS", "BlockSizes", "best_implementation", "grpo_loss", "grpo_token_loss"]
