"""Rewards in worker processes: a call that hangs is killed after its timeout, a crash takes only its worker,
NaN and out-of-range scores are per-sample errors, `reward/errors` counts them all, and a synchronous run
with a reward that hangs finishes."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest

from rft_jax.data import Example
from rft_jax.rewards import RewardResult, RewardSpec, build_reward
from rft_jax.rewards.pool import PooledScorer
from rft_jax.rewards.process_pool import RewardWorkersConfig, reward_pool, spec_of
from rft_jax.rewards.registry import score_range
from rft_jax.rollout.engine import Rollouts, score_episodes
from rft_jax.rollout.episode import Episode
from tests.test_train_run import tiny_config, tiny_model  # noqa: F401  (a fixture)

EX = Example(id="e", messages=[{"role": "user", "content": "2+2?"}], reference_answer=4)
MISBEHAVES = build_reward(RewardSpec("tests.toy_rewards:misbehaves"))
TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def pool():
    """Two worker processes scoring `misbehaves`, one sample per call, shared by the tests of this module
    (each leaves it with two working processes)."""
    with reward_pool(RewardWorkersConfig(processes=2, timeout_s=TIMEOUT_S), MISBEHAVES) as p:
        yield p


def workers_alive() -> int:
    """Spawned children of this process still running, read from /proc: waiting on them here (as
    multiprocessing.active_children does) would race the pool's own wait and lose it their exit codes."""
    alive = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (name)": state, ppid, ...
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        alive += fields[1] == str(os.getpid()) and fields[0] != "Z" and b"spawn_main" in cmdline
    return alive


def wait_for_workers(n: int, within_s: float = 60.0) -> None:
    deadline = time.monotonic() + within_s
    while workers_alive() != n and time.monotonic() < deadline:
        time.sleep(0.05)
    assert workers_alive() == n


def score(pool, completions: list[str]) -> list[RewardResult]:
    return pool.submit([EX] * len(completions), completions).result(timeout=60)


@pytest.mark.timeout(60)
def test_a_hung_call_is_killed_after_its_timeout_and_the_pool_goes_on(pool):
    score(pool, ["warm"])  # the processes are up
    t0 = time.monotonic()
    results = score(pool, ["a", "hang", "abc"])
    assert time.monotonic() - t0 < TIMEOUT_S + 5
    assert [r.score for r in results] == [0.01, 0.0, 0.03]
    assert results[1].error == f"reward timed out after {TIMEOUT_S:g} s (reward_workers.timeout_s)"
    assert results[0].error is None and results[2].error is None
    wait_for_workers(2)  # the hung process was killed, and a new one took its place
    assert [r.score for r in score(pool, ["ab", "abcd"])] == [0.02, 0.04]
    assert pool.stats()["timeouts"] == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("completion, death", [("exit", "exit code 3"), ("segv", "killed by SIGSEGV")])
def test_a_crashed_worker_fails_its_samples_and_is_replaced(pool, completion, death):
    results = score(pool, ["a", completion, "abc"])
    assert [r.score for r in results] == [0.01, 0.0, 0.03]
    assert results[1].error == (f"tests.toy_rewards:misbehaves: reward worker process died ({death}); a new one "
                                "replaces it")
    wait_for_workers(2)
    assert [r.score for r in score(pool, [completion.upper(), "xy"])] == [0.04, 0.02]


@pytest.mark.timeout(60)
def test_nan_and_out_of_range_scores_are_per_sample_errors(pool):
    results = score(pool, ["nan", "big", "ok"])
    assert "non-finite score nan" in results[0].error
    assert results[1].error == "tests.toy_rewards:misbehaves: reward returned 2, outside its range [0, 1]"
    assert [r.score for r in results] == [0.0, 0.0, 0.02] and results[2].error is None


class Nonsense:
    """A scorer of the user's own (in-process threads): NaN, infinity and a score beside its error."""

    name = "nonsense"

    def score_batch(self, examples, completions):
        return [RewardResult(math.nan), RewardResult(math.inf), RewardResult(math.nan, error="x"), RewardResult(5.0)]


def test_in_process_threads_check_scores_too():
    with reward_pool(RewardWorkersConfig(processes=0), Nonsense()) as threads:
        results = threads.submit([EX] * 4, ["a"] * 4).result(timeout=10)
    assert [r.error is not None for r in results] == [True, True, True, False]  # no range declared: 5.0 goes
    assert all(r.score == 0.0 for r in results[:3]) and results[3].score == 5.0


def test_declared_ranges():
    assert score_range(build_reward(RewardSpec("math_answer"))) == (0.0, 1.0)
    assert score_range(build_reward(RewardSpec("math_answer", {"format_credit": 1.5}))) == (0.0, 1.5)
    assert score_range(build_reward(RewardSpec("answer_format"))) == (0.0, 1.0)
    assert score_range(build_reward(RewardSpec("length_penalty"))) == (-1.0, 0.0)
    assert score_range(MISBEHAVES) == (0.0, 1.0)  # declared by the function
    assert score_range(build_reward(RewardSpec("tests.toy_rewards:brevity"))) == (-math.inf, math.inf)
    aggregate = RewardSpec.aggregate(a=RewardSpec("math_answer", weight=2.0),
                                     b=RewardSpec("length_penalty", weight=-0.5))
    assert score_range(build_reward(aggregate)) == (0.0, 2.5)
    assert spec_of(build_reward(aggregate)) == aggregate  # a worker rebuilds exactly this reward


def test_a_reward_that_cannot_be_rebuilt_is_refused_with_the_opt_out():
    with pytest.raises(ValueError, match="reward_workers.processes=0"):
        reward_pool(RewardWorkersConfig(processes=2), Nonsense())


@pytest.mark.timeout(60)
def test_reward_errors_counts_every_kind_of_failure(pool):
    completions = ["a", "hang", "exit", "nan", "big", "abc"]
    groups = [[Episode.single_turn(EX, [1, 2], [3], [0.0], policy_version=0, finish_reason="stop", text=c)
               for c in completions[i:i + 3]] for i in (0, 3)]
    score_episodes(PooledScorer(MISBEHAVES, pool), groups)
    errors = Rollouts(groups, {}).errors_BxG
    assert errors.tolist() == [[False, True, True], [True, True, False]]
    assert float(errors.mean()) == pytest.approx(4 / 6)  # the run's `reward/errors`
    wait_for_workers(2)


@pytest.mark.slow  # a whole run (32 s); the pool's own tests above pin the timeout and the per-sample errors
@pytest.mark.timeout(240)  # without worker processes the run hangs for an hour in the reward
def test_a_synchronous_run_with_a_reward_that_hangs_finishes(tiny_model, tmp_path):  # noqa: F811
    cfg = tiny_config(tiny_model, str(tmp_path), max_steps=2, export=False,
                      reward=RewardSpec("tests.toy_rewards:hangs_forever_sometimes"),
                      reward_workers=RewardWorkersConfig(processes=2, timeout_s=1.0))
    from rft_jax.train.loop import run  # noqa: PLC0415

    run(cfg)
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [m for m in metrics if "reward/errors" in m]
    assert [m["step"] for m in steps] == [1, 2]
    assert max(m["reward/errors"] for m in steps) > 0
    assert any(m.get("alarm/reward_errors") for m in steps)  # and the alarm tells the user
