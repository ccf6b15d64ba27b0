"""Running model-written code as hostile input: one limited, isolated process per execution."""

from rft_jax.rewards.sandbox.limits import SandboxLimits
from rft_jax.rewards.sandbox.pool import SandboxPool
from rft_jax.rewards.sandbox.process import SandboxResult, run_python

__all__ = ["SandboxLimits", "SandboxPool", "SandboxResult", "run_python"]
