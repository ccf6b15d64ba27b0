"""Running model-written code as hostile input: one limited, isolated process per execution.

Isolation is bubblewrap unless a weaker backend is named; without a working
bubblewrap, `auto` raises SandboxUnavailable before anything runs (isolation.py).
"""

from rft_jax.rewards.sandbox.isolation import SandboxUnavailable
from rft_jax.rewards.sandbox.limits import SandboxLimits
from rft_jax.rewards.sandbox.pool import SandboxPool
from rft_jax.rewards.sandbox.process import SandboxResult, run_python

__all__ = ["SandboxLimits", "SandboxPool", "SandboxResult", "SandboxUnavailable", "run_python"]
