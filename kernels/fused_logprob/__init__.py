"""Fused log-prob / entropy from hidden states, without materialising the [N, V] logits.

Entry point: `api.token_logprobs_and_entropy`; oracle: `reference.py`.
"""

from kernels.fused_logprob.api import IMPLEMENTATIONS, best_implementation, token_logprobs_and_entropy
from kernels.fused_logprob.block_sizes import BlockSizes

__all__ = ["IMPLEMENTATIONS", "BlockSizes", "best_implementation", "token_logprobs_and_entropy"]
