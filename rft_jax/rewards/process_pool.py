"""Reward calls in worker processes: a hung reward is killed, and a crash takes only its worker down.

Each worker of the run's RewardPool (rft_jax/rewards/pool.py) owns one process, started with the "spawn"
context: the training process holds JAX's threads, which a fork would copy in whatever state they were.
The process rebuilds each scorer it is asked for from its RewardSpec, once, then scores the calls sent to
it over a pipe. A call past the pool's timeout has its process killed (SIGKILL: a reward stuck in C code,
sympy included, ignores anything gentler); a process that dies on its own (segfault, os._exit, the kernel's
OOM killer) fails its call. Either way the call's samples get an error, counted in `reward/errors`, and a
new process takes the worker's place before its next call.

A spawned process imports the parent's main module again, as multiprocessing always does: a script that
calls `rft_jax.train.loop.run` needs the usual `if __name__ == "__main__":` guard. The `rft-jax` command's
main module imports no JAX, so a worker costs about the import of rft_jax.rewards.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import signal
from typing import Any

from rft_jax.rewards.pool import CallFailed, RewardPool, batched
from rft_jax.rewards.registry import REWARDS
from rft_jax.rewards.scorer import AggregateScorer, FunctionScorer, build_reward
from rft_jax.rewards.spec import RewardSpec

_SPAWN = multiprocessing.get_context("spawn")
OPT_OUT = "set reward_workers.processes=0 to score it in the training process"


@dataclasses.dataclass(frozen=True)
class RewardWorkersConfig:
    """Where rewards run and for how long (rft_jax/rewards/process_pool.py): one setting for training,
    synchronous or asynchronous, the signal check and evaluation."""

    processes: int = 2
    """Worker processes, each scoring with the reward rebuilt from its spec. A call over `timeout_s` has its
    process killed and a crashed process is replaced; their samples become errors (`reward/errors`). 0: score
    on `threads` threads of the training process instead, for a reward that cannot be rebuilt in another
    process (a function defined in __main__); a hung call is then abandoned, not stopped, and a crash in the
    reward ends the run."""
    threads: int = 4
    """processes=0 only: reward calls running at once on threads of the training process."""
    timeout_s: float = 60.0
    """A reward call running longer gives each of its samples an error (reward 0) and the run goes on: the
    longest one call can hold a step up. A batched reward (remote endpoint, judge) gets it per batch."""
    chunk_size: int = 0
    """Samples per reward call. 0: one sample per call for per-sample rewards (a slow or failing sample fails
    alone, and the workers score in parallel), a step's whole batch for batched ones (the remote endpoint,
    functions with a `batched` form), which keeps their batching."""

    def __post_init__(self):
        if self.processes < 0 or self.threads < 1 or not self.timeout_s > 0 or self.chunk_size < 0:
            raise ValueError(f"reward_workers: processes={self.processes} must be >= 0, threads={self.threads} "
                             f">= 1, timeout_s={self.timeout_s} > 0 and chunk_size={self.chunk_size} >= 0")


def reward_pool(cfg: RewardWorkersConfig, scorer: Any) -> RewardPool:
    """The run's reward pool: `cfg.processes` worker processes that rebuild `scorer` from its spec, or
    `cfg.threads` in-process threads with processes=0. Chunk 0: per sample, or whole batches for a batched
    reward."""
    chunk = cfg.chunk_size or (0 if batched(scorer) else 1)
    if cfg.processes == 0:
        return RewardPool(scorer, workers=cfg.threads, timeout_s=cfg.timeout_s, chunk_size=chunk)
    spec = spec_of(scorer)
    if spec is None:
        raise ValueError(not_rebuildable(scorer))
    runner = ProcessRunner(spec, start_timeout_s=max(60.0, cfg.timeout_s))
    return RewardPool(scorer, workers=cfg.processes, timeout_s=cfg.timeout_s, chunk_size=chunk, runner=runner)


def spec_of(scorer: Any) -> RewardSpec | None:
    """The spec that rebuilds `scorer` in another process, or None when it was not built from one (or names a
    function of __main__, which a worker process cannot import)."""
    if isinstance(scorer, AggregateScorer):
        parts = [(name, weight, spec_of(part)) for name, (weight, part) in scorer.parts.items()]
        if any(spec is None for _, _, spec in parts):
            return None
        return RewardSpec("aggregate", components=tuple((name, dataclasses.replace(spec, weight=weight))
                                                        for name, weight, spec in parts))
    if not isinstance(scorer, FunctionScorer):
        return None
    module, _, attr = scorer.name.partition(":")
    if REWARDS.get(scorer.name) is scorer.entry or (attr and module != "__main__"):
        return RewardSpec(scorer.name, dict(scorer.params))
    return None


def not_rebuildable(scorer: Any) -> str:
    name = getattr(scorer, "name", type(scorer).__name__)
    return (f"reward {name!r} cannot be rebuilt from a spec in a worker process (it is not a registered reward, "
            f"an aggregate, or an importable 'module:function'): {OPT_OUT}")


def how_it_died(process: Any) -> str:
    code = process.exitcode
    if code is None or code >= 0:
        return f"exit code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:  # a signal without a name (real-time)
        return f"killed by signal {-code}"


@dataclasses.dataclass(eq=False)
class _Child:
    """A worker's process and its end of the pipe; `error` says why it cannot take calls."""

    process: Any
    conn: Any
    error: str | None = None


class ProcessRunner:
    """RewardPool's runner that sends each worker's calls to a process of its own (see the module docstring).
    Every process builds `spec`'s scorer as it starts, before its worker takes a call, so the start does
    not count against a call's timeout."""

    def __init__(self, spec: RewardSpec, start_timeout_s: float = 60.0):
        self.spec, self.start_timeout_s = spec, start_timeout_s
        self._specs: dict[int, tuple[Any, RewardSpec | None]] = {}  # id(scorer) -> (scorer, its spec)

    def prepare(self, worker: Any) -> None:
        child = worker.resource
        if child is None or child.error is not None or not child.process.is_alive():
            if child is not None:
                _stop(child)
            worker.resource = self._start()

    def call(self, worker: Any, scorer: Any, examples: list, completions: list[str]) -> Any:
        child = worker.resource
        if child.error is not None:
            raise CallFailed(child.error)
        request = (self._spec(scorer), examples, completions)
        try:
            child.conn.send(request)
            kind, payload = child.conn.recv()
        except (EOFError, OSError):  # killed by the pool's watchdog, or crashed
            child.process.join(5)
            child.error = f"reward worker process died ({how_it_died(child.process)}); a new one replaces it"
            raise CallFailed(child.error) from None
        if kind != "ok":
            if payload == MEMORY:  # the process exits after it: the next call gets a new one
                child.error = f"{MEMORY}; its worker process is replaced"
            raise CallFailed(payload)
        return payload

    def abandon(self, worker: Any) -> None:
        """The call is over its time: kill the process, which ends the worker's wait for its reply."""
        if worker.resource is not None:
            worker.resource.process.kill()

    def release(self, worker: Any) -> None:
        if worker.resource is not None:
            _stop(worker.resource)

    def _spec(self, scorer: Any) -> RewardSpec:
        known = self._specs.get(id(scorer))
        if known is None or known[0] is not scorer:  # the scorer is kept, so its id is not reused
            known = self._specs[id(scorer)] = (scorer, spec_of(scorer))
        if known[1] is None:
            raise CallFailed(not_rebuildable(scorer))
        return known[1]

    def _start(self) -> _Child:
        ours, theirs = _SPAWN.Pipe()
        process = _SPAWN.Process(target=serve_calls, args=(theirs, self.spec), name="rft-jax-reward", daemon=True)
        child = _Child(process, ours)
        try:
            process.start()
        except OSError as err:  # out of processes or file descriptors: the calls fail until a start works
            child.error = f"could not start a reward worker process: {err}"
            return child
        finally:
            theirs.close()
        try:
            if not ours.poll(self.start_timeout_s):
                child.error = f"reward worker process did not get ready within {self.start_timeout_s:g} s"
            elif (reply := ours.recv())[0] != "ready":
                child.error = reply[1]
        except (EOFError, OSError):
            process.join(5)
            child.error = f"reward worker process died while starting ({how_it_died(process)})"
        if child.error is not None:
            process.kill()
        return child


def _stop(child: _Child) -> None:
    """Close the pipe (an idle process exits on it), then make sure the process is gone and reaped."""
    child.conn.close()
    if child.process.pid is None:  # never started
        return
    child.process.join(1)
    if child.process.is_alive():
        child.process.kill()
        child.process.join()


# What runs in a worker process.


def serve_calls(conn: Any, first: RewardSpec) -> None:
    """Build `first`'s scorer, say "ready", then score every (spec, examples, completions) received, each
    spec's scorer built once. Ends when the pipe closes, or after a MemoryError (a new process starts clean)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the run between steps; the run closes the pool
    scorers: dict[str, Any] = {}
    failure = _scoring(scorers, first, None, None)
    conn.send(failure or ("ready", None))
    while failure is None:
        try:
            spec, examples, completions = conn.recv()
        except EOFError:
            return
        reply = _scoring(scorers, spec, examples, completions)
        try:
            conn.send(reply)
        except Exception as err:  # noqa: BLE001 (results that cannot be pickled: the call fails, not the worker)
            conn.send(("raised", f"its results could not be sent back: {type(err).__name__}: {err}"))
        if reply == ("raised", MEMORY):
            return


MEMORY = "reward raised MemoryError"


def _scoring(scorers: dict, spec: RewardSpec, examples: list | None, completions: list | None) -> Any:
    """("ok", results) of a call, ("raised", why) when building or scoring raised; with no examples, only the
    build, and None when it went well."""
    key = json.dumps(spec.to_json(), sort_keys=True, default=repr)
    try:
        if key not in scorers:
            scorers[key] = build_reward(spec)
    except Exception as err:  # noqa: BLE001
        return "raised", f"could not rebuild reward {spec.name!r} in a worker process ({type(err).__name__}: " \
                         f"{err}): {OPT_OUT}"
    if examples is None:
        return None
    try:
        return "ok", scorers[key].score_batch(examples, completions)
    except MemoryError:
        return "raised", MEMORY
    except BaseException as err:  # noqa: BLE001 (a reward's SystemExit must not end the worker)
        return "raised", f"reward raised {type(err).__name__}: {err}"
