"""KV-cached sampling of rollouts with their log-probabilities."""

from rft_jax.sampling.generate import Completion, decode_rollout, generate_ids
from rft_jax.sampling.processors import SamplingParams
from rft_jax.sampling.sampler import BudgetForcing, Rollout, sample

__all__ = ["BudgetForcing", "Completion", "Rollout", "SamplingParams", "decode_rollout", "generate_ids", "sample"]
