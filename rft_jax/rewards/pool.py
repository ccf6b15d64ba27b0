"""A pool of reward workers with a time limit per call: every reward of a run is scored through one.

A reward is code the loop does not control: it may raise, hang for minutes, crash its process or return
nonsense, and none of that may reach the loop. The asynchronous loop also submits a rollout batch and keeps
generating and training while it is scored, so an HTTP endpoint, a code sandbox or an AI judge overlaps the
accelerator's work instead of stalling it. Each worker is a thread; a runner decides where its calls run:
on the thread itself (`InProcess`), or in a process of the worker's own that a timeout kills
(rft_jax/rewards/process_pool.py, the default of a training run). The guarantees:

- `submit` returns a Future at once. The submission is split into calls of at most `chunk_size` samples
  (0: one call, so a batched reward such as the remote endpoint keeps its batching); at most `workers` calls
  run at once, the rest wait their turn (FIFO across submissions).
- The future always resolves and never raises: one RewardResult per sample, in submission order, within
  queue wait + `timeout_s` (counted from when a call starts running) + a little.
- A call over its limit, or one that raises or returns the wrong number or kind of results, gives each of
  its samples `failed(...)` naming the problem; so does a score that is NaN, infinite or outside the
  reward's declared range (registry.score_range), for its own sample. A hung call's worker is abandoned (the
  runner kills its process; an in-process thread is left to finish, a daemon, its late result discarded)
  and a replacement takes its slot, so `workers` workers keep working however many calls hang.
- Threads are started once and reused, not one per call: a thread abandoned inside C code that holds the
  GIL can stall `Thread.start()`, so a new thread is started only to replace a hung one.
- `close` drops queued calls (their samples get "reward pool closed"), lets running calls finish or time
  out, and never waits for either.

The futures cannot be cancelled, and their done-callbacks run on the pool's threads: keep them short.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import itertools
import threading
import time
from typing import Any

from rft_jax.rewards.registry import score_range
from rft_jax.rewards.result import RewardResult, failures, in_range, output_problem

CLOSED = "reward pool closed"


def timed_out(n: int, timeout_s: float) -> list[RewardResult]:
    return failures(n, f"reward timed out after {timeout_s:g} s (reward_workers.timeout_s)")


class CallFailed(Exception):
    """A runner's call failed outside the reward's code (its process died): the message is the samples' error."""


class InProcess:
    """The runner that calls the scorer on the worker's own thread: a hung call can only be abandoned, and a
    crash takes the training process with it. For rewards that cannot be rebuilt in another process."""

    def prepare(self, worker: _Worker) -> None:
        pass

    def call(self, worker: _Worker, scorer: Any, examples: list, completions: list[str]) -> Any:
        return scorer.score_batch(examples, completions)

    def abandon(self, worker: _Worker) -> None:
        pass

    def release(self, worker: _Worker) -> None:
        pass


@dataclasses.dataclass(eq=False)
class _Submission:
    future: concurrent.futures.Future
    results: list
    remaining: int  # calls not yet finished
    scorer: Any = None  # None: the pool's


@dataclasses.dataclass(eq=False)
class _Call:
    submission: _Submission
    start: int  # index of the first sample in the submission
    examples: list
    completions: list[str]
    done: bool = False  # its results are written (by its worker, the watchdog or close), later ones dropped


@dataclasses.dataclass(eq=False)
class _Worker:
    call: _Call | None = None
    deadline: float = 0.0  # time.monotonic() by which `call` must finish
    resource: Any = None  # what the runner keeps for this worker (its process)


Resolution = tuple[concurrent.futures.Future, list] | None


class RewardPool:
    """Scores submissions on `workers` workers; each call of `scorer.score_batch` gets `timeout_s` seconds.

    Lets slow rewards overlap generation and training, and turns a reward that raises, hangs, crashes or
    returns nonsense into per-sample errors instead of a stalled or crashed loop (see the module docstring).
    `runner`: where calls run (default `InProcess()`: on the workers' threads).
    """

    def __init__(self, scorer: Any, *, workers: int = 4, timeout_s: float = 300.0, chunk_size: int = 0,
                 runner: Any = None):
        if workers < 1:
            raise ValueError(f"RewardPool needs workers >= 1, got {workers}")
        if not timeout_s > 0:
            raise ValueError(f"RewardPool needs timeout_s > 0, got {timeout_s}")
        if chunk_size < 0:
            raise ValueError(f"RewardPool needs chunk_size >= 0 (0: one call per submission), got {chunk_size}")
        self.scorer = scorer
        self.workers = workers
        self.timeout_s = timeout_s
        self.chunk_size = chunk_size
        self.runner = runner or InProcess()
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # workers wait here for calls
        self._wake = threading.Condition(self._lock)  # the watchdog waits here for the next deadline
        self._queue: collections.deque[_Call] = collections.deque()
        self._abandoned: set[_Worker] = set()  # timed out, thread still inside the scorer
        self._counts: collections.Counter[str] = collections.Counter()
        self._closed = False
        self._ids = itertools.count()
        self._working: list[_Worker] = [_Worker() for _ in range(workers)]  # live workers, each holding a slot
        for worker in self._working:
            self._spawn(worker)
        threading.Thread(target=self._watch, name="rft-jax-reward-watchdog", daemon=True).start()

    def submit(self, examples: list, completions: list[str], scorer: Any = None) -> concurrent.futures.Future:
        """Queue the samples; the future resolves to list[RewardResult] in the same order and never raises.
        `scorer`: another scorer to call on these samples (evaluation's views share the run's pool)."""
        examples, completions = list(examples), list(completions)
        if len(examples) != len(completions):
            raise ValueError(f"{len(examples)} examples but {len(completions)} completions")  # caller bug
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_running_or_notify_cancel()  # cannot be cancelled: it always resolves
        n = len(examples)
        if n == 0:
            future.set_result([])
            return future
        size = self.chunk_size or n
        starts = range(0, n, size)
        submission = _Submission(future, [None] * n, len(starts), scorer)
        calls = [_Call(submission, s, examples[s:s + size], completions[s:s + size]) for s in starts]
        with self._lock:
            self._counts["calls"] += len(calls)
            if not self._closed:
                self._queue.extend(calls)
                self._work.notify(len(calls))
                return future
            self._counts["closed"] += len(calls)
            done = [self._finish(call, failures(len(call.examples), CLOSED)) for call in calls]
        _resolve(done)
        return future

    def close(self) -> None:
        """Stop accepting work and fail queued calls; running calls finish or time out on their own."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            dropped = list(self._queue)
            self._queue.clear()
            self._counts["closed"] += len(dropped)
            done = [self._finish(call, failures(len(call.examples), CLOSED)) for call in dropped]
            self._work.notify_all()
            self._wake.notify_all()
        _resolve(done)

    def stats(self) -> dict[str, float]:
        """Counts of calls so far, and what the pool is doing now (for the training log)."""
        with self._lock:
            return {
                "calls": float(self._counts["calls"]),  # submitted, including those refused after close
                "completed": float(self._counts["completed"]),  # returned valid results in time
                "timeouts": float(self._counts["timeouts"]),
                "failures": float(self._counts["failures"]),  # raised or returned a malformed output
                "closed": float(self._counts["closed"]),  # dropped by close
                "queued": float(len(self._queue)),
                "busy": float(sum(w.call is not None for w in self._working)),
                "abandoned_running": float(len(self._abandoned)),
            }

    def __enter__(self) -> RewardPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _spawn(self, worker: _Worker) -> None:
        threading.Thread(target=self._serve, args=(worker,), name=f"rft-jax-reward-{next(self._ids)}",
                         daemon=True).start()

    def _serve(self, worker: _Worker) -> None:
        """One worker thread: take calls until the pool closes, or until its call is abandoned."""
        try:
            self._take_calls(worker)
        finally:
            self.runner.release(worker)

    def _take_calls(self, worker: _Worker) -> None:
        while True:
            if not self._closed:  # read without the lock: at worst one process is started for nothing
                self.runner.prepare(worker)  # e.g. (re)start its process, before a deadline runs
            with self._lock:
                while not self._queue and not self._closed:
                    self._work.wait()
                if not self._queue:  # closed
                    self._working.remove(worker)
                    self._wake.notify()
                    return
                call = self._queue.popleft()
                worker.call, worker.deadline = call, time.monotonic() + self.timeout_s
                self._wake.notify()  # a new deadline for the watchdog
            results, ok = self._run(worker, call)
            with self._lock:
                if not call.done:
                    self._counts["completed" if ok else "failures"] += 1
                done = self._finish(call, results)
                abandoned = worker in self._abandoned
                self._abandoned.discard(worker)
                worker.call = None
                self._wake.notify()
            _resolve([done])
            if abandoned:  # a replacement holds this slot now
                return

    def _run(self, worker: _Worker, call: _Call) -> tuple[list[RewardResult], bool]:
        n = len(call.examples)
        scorer = call.submission.scorer or self.scorer
        name = getattr(scorer, "name", type(scorer).__name__)
        try:
            results = self.runner.call(worker, scorer, call.examples, call.completions)
            problem = output_problem(results, n)
            if problem is None:
                return in_range(list(results), *score_range(scorer), name), True
        except CallFailed as err:
            problem = str(err)
        except BaseException as err:  # noqa: B036 (a reward's SystemExit must not kill the worker)
            problem = f"reward raised {type(err).__name__}: {err}"
        return failures(n, f"{name}: {problem}"), False

    def _watch(self) -> None:
        """The watchdog: fails calls past their deadline and replaces their workers."""
        while True:
            with self._lock:
                while True:
                    busy = [w for w in self._working if w.call is not None]
                    if self._closed and not busy:
                        return
                    now = time.monotonic()
                    expired = [w for w in busy if w.deadline <= now]
                    if expired:
                        break
                    self._wake.wait(min(w.deadline for w in busy) - now if busy else None)
                done, spawn = [], []
                for worker in expired:
                    call = worker.call
                    self._working.remove(worker)
                    self._abandoned.add(worker)
                    self._counts["timeouts"] += 1
                    done.append(self._finish(call, timed_out(len(call.examples), self.timeout_s)))
                    if not self._closed:
                        spawn.append(_Worker())
                        self._working.append(spawn[-1])
            for worker in expired:
                self.runner.abandon(worker)
            for worker in spawn:
                self._spawn(worker)
            _resolve(done)

    def _finish(self, call: _Call, results: list[RewardResult]) -> Resolution:
        """Write a call's results (under the lock); the submission's future and results once all are in."""
        if call.done:
            return None
        call.done = True
        submission = call.submission
        submission.results[call.start:call.start + len(results)] = results
        submission.remaining -= 1
        return (submission.future, submission.results) if submission.remaining == 0 else None


def _resolve(done: list[Resolution]) -> None:
    """Set futures outside the lock: their callbacks may submit again."""
    for item in done:
        if item is not None:
            future, results = item
            future.set_result(list(results))


class PooledScorer:
    """A scorer whose every batch is scored through a `RewardPool`: a run's reward and views, so that
    evaluation and the signal check get the same time limits as training and a hung reward stalls none
    of them. Everything else (name, needs_reference, render_reference) is the wrapped scorer's."""

    def __init__(self, scorer: Any, pool: RewardPool):
        self.scorer, self.pool = scorer, pool

    def __getattr__(self, name: str) -> Any:
        return getattr(self.scorer, name)

    def score_batch(self, examples: list, completions: list[str]) -> list[RewardResult]:
        return self.pool.submit(examples, completions, self.scorer).result()

    def score(self, example: Any, completion: str) -> RewardResult:
        return self.score_batch([example], [completion])[0]


def batched(scorer: Any) -> bool:
    """Whether a scorer scores a batch in one go (a `batch_fn`, e.g. the remote endpoint), so it should get
    whole batches; else the pool calls it once per sample."""
    parts = getattr(scorer, "parts", None)
    if parts is not None:  # an aggregate: batched when any component is
        return any(batched(part) for _, part in parts.values())
    entry = getattr(scorer, "entry", None)
    return entry is None or entry.batch_fn is not None
