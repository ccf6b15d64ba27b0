"""A bounded pool of sandbox workers, each with its own user id slot.

Bounding concurrency keeps a batch of hostile programs from exhausting the host;
a user id per slot keeps one run's RLIMIT_NPROC count and final kill sweep from
touching another's.
"""

from __future__ import annotations

import queue
from concurrent.futures import ThreadPoolExecutor

from rft_jax.rewards.sandbox.limits import SandboxLimits
from rft_jax.rewards.sandbox.process import SandboxResult, default_uid, run_python


class SandboxPool:
    def __init__(self, max_workers: int = 2, limits: SandboxLimits = SandboxLimits(), backend: str = "auto"):
        if not 1 <= max_workers <= 63:  # default_uid() leaves 64 uids per host process
            raise ValueError(f"max_workers must be in 1..63, got {max_workers}")
        self.max_workers = max_workers
        self.limits = limits
        self.backend = backend
        self._uids: queue.Queue[int] = queue.Queue()
        for slot in range(max_workers):
            self._uids.put(default_uid() + 1 + slot)

    def run(self, files: dict[str, str], entry: str, args: tuple[str, ...] = (), **options) -> SandboxResult:
        """One run on a free uid slot; `options` (limits, pass_fds, stop) go to run_python."""
        uid = self._uids.get()
        try:
            return run_python(files, entry, **{"limits": self.limits, "backend": self.backend, **options},
                              uid=uid, args=args)
        finally:
            self._uids.put(uid)

    def map(self, jobs: list[tuple]) -> list[SandboxResult]:
        """Run (files, entry[, args]) jobs with at most `max_workers` at once; results in job order."""
        with ThreadPoolExecutor(self.max_workers) as executor:
            return list(executor.map(lambda job: self.run(*job), jobs))
