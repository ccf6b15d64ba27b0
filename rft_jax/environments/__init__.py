"""Environments for multi-turn tool use: reset(example) -> messages, step(turn) -> StepResult (docs/environments.md)."""

from rft_jax.environments.base import Environment, StepResult, ToolEnvironment, ToolError
from rft_jax.environments.config import FACTORIES, EnvironmentConfig, make_environment

__all__ = ["FACTORIES", "Environment", "EnvironmentConfig", "StepResult", "ToolEnvironment", "ToolError",
           "make_environment"]
