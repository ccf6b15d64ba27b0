"""The multi-turn rollout's knobs (docs/agents.md), apart from the rollout code so that CLIs import them cheaply."""

from __future__ import annotations

import dataclasses
from typing import Literal

from rft_jax.environments.config import EnvironmentConfig


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """Multi-turn rollouts with tools (off unless `environment.name` is set)."""

    environment: EnvironmentConfig = dataclasses.field(default_factory=EnvironmentConfig)
    max_turns: int = 4
    """N: policy turns per episode; an episode still calling tools at the N-th turn ends there ("turns")."""
    max_episode_tokens: int = 512
    """The episode's whole budget after the prompt: policy, tool and template tokens together."""
    tool_format: Literal["auto", "hermes", "llama3"] = "auto"
    """How the model writes calls: "auto" (from the chat template), "hermes" (<tool_call>{json}</tool_call>)
    or "llama3" (a JSON object as the message)."""
    turn_reward_weight: float = 0.0
    """Per-turn shaping: the episode's reward adds this times the sum of the environment's per-turn rewards."""

    @property
    def enabled(self) -> bool:
        return self.environment.name != "none"
