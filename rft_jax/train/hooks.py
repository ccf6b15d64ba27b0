"""Everything the run does between updates, as functions with an interval (as levanter's trainer hooks).

A hook sees the step just finished through a `StepContext`: it may add
metrics (validation), decide that the run stops (early stopping, the time
budget, a signal), or save something (checkpoints, rollout logs). Hooks run in
list order, so the ones that decide to stop come before the checkpoint.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Callable

from rft_jax.grpo import TrainState
from rft_jax.parallel import agree
from rft_jax.rollout.engine import Rollouts


@dataclasses.dataclass
class StepContext:
    """The step just finished, as the hooks see it."""

    step: int  # steps done so far (1-based)
    total_steps: int
    state: TrainState
    metrics: dict[str, float]
    rollouts: Rollouts
    stop: str | None = None  # why the run ends after this step; hooks set it

    @property
    def last(self) -> bool:
        return self.step == self.total_steps


@dataclasses.dataclass(frozen=True)
class Hook:
    name: str
    fn: Callable[[StepContext], None]
    every: int = 1  # run when step % every == 0 (0: only as `at_last` / `at_stop` say)
    at_last: bool = False  # also after the last step
    at_stop: bool = False  # also after the step on which a hook stopped the run

    def due(self, ctx: StepContext) -> bool:
        return bool((self.every and ctx.step % self.every == 0) or (self.at_last and ctx.last)
                    or (self.at_stop and ctx.stop))


def run_hooks(hooks: list[Hook], ctx: StepContext) -> None:
    for hook in hooks:
        if hook.due(ctx):
            hook.fn(ctx)


def time_budget_hook(budget_s: float, started: float) -> Hook:
    """Stops once `budget_s` seconds have passed since `started` (a `time.perf_counter()` reading; a resumed run
    moves it back by the time its earlier attempts took, so the budget is the whole run's)."""
    def check(ctx: StepContext) -> None:
        if budget_s and agree(time.perf_counter() - started > budget_s):  # process 0's clock decides
            ctx.stop = ctx.stop or "time budget reached"

    return Hook("time_budget", check)


def early_stopping_hook(meta: dict, patience: int, interval: int) -> Hook:
    """Stops after `patience` validations in a row without improvement (the validation hook counts them)."""
    def check(ctx: StepContext) -> None:
        if patience and meta["bad_evals"] >= patience:
            ctx.stop = ctx.stop or "validation stopped improving"

    return Hook("early_stopping", check, every=interval)


class StopRequested:
    """SIGINT/SIGTERM set a flag; the run saves a checkpoint and leaves at the next step boundary."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C means now
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n[rft-jax] signal {signum}: saving a checkpoint after this step, then stopping", flush=True)

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def hook(self) -> Hook:
        def check(ctx: StepContext) -> None:
            if agree(self.requested):  # every process stops at the step process 0 saw the signal
                ctx.stop = "signal"

        return Hook("signal", check)
