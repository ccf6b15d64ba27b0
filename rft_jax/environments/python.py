"""`python`: run model-written code in the code sandbox (rft_jax/rewards/sandbox) and return what it printed.

Each call is a fresh sandboxed process (no state carries over between calls) whose
wall-clock limit is the call's timeout; the sandbox kills its whole process tree, so
unlike an in-process tool nothing is left running. The reply is the program's output
(stdout and stderr interleaved); a run that fails (an exception, a limit) is a tool
error and the reply ends with the sandbox's reason.
"""

from __future__ import annotations

import math
import queue
from collections.abc import Callable

from rft_jax.environments.base import ToolEnvironment, ToolError, function_schema
from rft_jax.rewards.sandbox import SandboxLimits, run_python
from rft_jax.rewards.sandbox.process import default_uid

SCHEMA = function_schema(
    "python", "Run a Python program in a sandbox (no network, no files kept) and return what it prints. "
    "Use print() to see values.", {"code": ("string", "the Python program")})

# When the host runs as root, each concurrent run needs its own unprivileged uid (the sandbox's final kill
# sweep kills every process of that uid). SandboxPool hands out the lowest slots of this process's range
# (code_tests uses them), so the tool takes the highest ones.
_slots: queue.Queue[int] = queue.Queue()
for _slot in range(16):
    _slots.put(63 - _slot)


class PythonEnvironment(ToolEnvironment):
    """One tool, `python(code)`."""

    def __init__(self, *, timeout_s: float = 5.0, memory_mb: int = 1024, backend: str = "auto"):
        super().__init__({"python": self.run}, [SCHEMA], timeout_s=timeout_s)
        self.limits = SandboxLimits(cpu_s=max(1, math.ceil(timeout_s)), wall_s=timeout_s, memory_mb=memory_mb,
                                    max_output_bytes=16 * 1024)
        self.backend = backend

    def invoke(self, fn: Callable[..., object], arguments: dict) -> object:
        return fn(**arguments)  # no worker thread: the sandbox enforces the timeout and kills the process

    def run(self, code: str) -> str:
        if not isinstance(code, str):
            raise ToolError("`code` must be a string holding a Python program")
        slot = _slots.get()
        try:
            result = run_python({"main.py": code}, "main.py", limits=self.limits, backend=self.backend,
                                uid=default_uid() + slot)  # the uid is used only when we run as root
        finally:
            _slots.put(slot)
        if result.status == "ok":
            return result.output if result.output.strip() else "(no output; use print() to see values)"
        # The reason first, where truncation cannot cut it off.
        raise ToolError(f"{result.error}\n{result.output.rstrip()}".rstrip())
