"""RewardPool: order, per-call timeouts with worker replacement, failure containment, chunking, close."""

import threading
import time

import pytest

from rft_jax.data import Example
from rft_jax.rewards import RewardResult, RewardSpec, build_reward
from rft_jax.rewards.pool import RewardPool, timed_out

EX = Example(id="e", messages=[{"role": "user", "content": "2+2?"}], reference_answer=4)


class FakeScorer:
    """Scores a completion by its length after `delay` s; a call with a completion containing "hang" blocks
    until `release` is set (never, within a test's own time limits)."""

    name = "fake"

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.release = threading.Event()
        self.calls: list[list[str]] = []  # list.append is atomic under the GIL

    def score_batch(self, examples, completions):
        self.calls.append(list(completions))
        if any("hang" in c for c in completions):
            self.release.wait()
        time.sleep(self.delay)
        return [RewardResult(float(len(c))) for c in completions]


@pytest.fixture
def fake():
    scorer = FakeScorer()
    yield scorer
    scorer.release.set()  # let abandoned threads finish


def scores(results):
    return [r.error or r.score for r in results]


def test_results_in_order_equal_the_scorers_own():
    scorer = build_reward(RewardSpec("math_answer"))
    completions = ["ANSWER: 4", "ANSWER: 5", "\\boxed{4}", "no idea", "The answer is 4", "ANSWER: 4.0"]
    examples = [EX] * len(completions)
    with RewardPool(scorer, workers=3, chunk_size=2, timeout_s=10) as pool:
        results = pool.submit(examples, completions).result(timeout=5)
    assert results == scorer.score_batch(examples, completions)
    assert [r.score for r in results][:2] == [1.0, 0.0]


def test_hung_call_times_out_while_other_calls_score(fake):
    with RewardPool(fake, workers=2, timeout_s=0.3, chunk_size=1) as pool:
        t0 = time.monotonic()
        first = pool.submit([EX] * 3, ["a", "hang", "abc"])
        second = pool.submit([EX], ["xy"])
        assert scores(second.result(timeout=5)) == [2.0]
        results = first.result(timeout=5)
        assert time.monotonic() - t0 < 2.0
        assert [r.score for r in results] == [1.0, 0.0, 3.0]
        assert results[1].error == "reward timed out after 0.3 s (reward_workers.timeout_s)"
        assert results[1] == timed_out(1, 0.3)[0]
        assert results[0].error is None and results[2].error is None
        stats = pool.stats()
    assert stats["timeouts"] == 1 and stats["completed"] == 3 and stats["abandoned_running"] == 1


def test_pool_keeps_its_workers_after_calls_hang(fake):
    with RewardPool(fake, workers=4, timeout_s=0.6, chunk_size=1) as pool:
        hung = pool.submit([EX] * 4, ["hang"] * 4).result(timeout=5)
        assert all("timed out" in r.error for r in hung)
        fake.delay = 0.3
        t0 = time.monotonic()
        results = pool.submit([EX] * 4, ["a", "bb", "ccc", "dddd"]).result(timeout=5)
        elapsed = time.monotonic() - t0
        stats = pool.stats()
    assert scores(results) == [1.0, 2.0, 3.0, 4.0]
    assert elapsed < 1.0, f"4 calls of 0.3 s on 4 workers took {elapsed:.2f} s after 4 hangs"
    assert stats["timeouts"] == 4 and stats["abandoned_running"] == 4 and stats["busy"] == 0


class Broken:
    name = "broken"

    def __init__(self, output):
        self.output = output

    def score_batch(self, examples, completions):
        if isinstance(self.output, BaseException):
            raise self.output
        return self.output


@pytest.mark.parametrize("output, error", [
    (RuntimeError("endpoint down"), "broken: reward raised RuntimeError: endpoint down"),
    (SystemExit(3), "broken: reward raised SystemExit: 3"),
    ([RewardResult(1.0)], "broken: reward returned 1 results for 3 samples"),
    ([RewardResult(1.0), None, RewardResult(1.0)], "broken: reward returned NoneType at position 1, expected RewardResult"),
    ([1.0, 1.0, 1.0], "broken: reward returned float at position 0, expected RewardResult"),
    (None, "broken: reward returned NoneType, expected a list of 3 RewardResults"),
])
def test_bad_scorer_output_becomes_per_sample_errors(output, error):
    with RewardPool(Broken(output), workers=1, timeout_s=5) as pool:
        results = pool.submit([EX] * 3, ["a", "b", "c"]).result(timeout=5)
        assert [(r.score, r.error) for r in results] == [(0.0, error)] * 3
        # the worker survived and still serves
        pool.scorer = FakeScorer()
        assert scores(pool.submit([EX], ["ok"]).result(timeout=5)) == [2.0]
        stats = pool.stats()
    assert stats["failures"] == 1 and stats["completed"] == 1


class SlowFirst(FakeScorer):
    """Earlier chunks take longer, so they finish last."""

    def score_batch(self, examples, completions):
        time.sleep(0.1 * (3 - int(completions[0]) // 3))
        return super().score_batch(examples, completions)


def test_chunk_size_splits_and_reassembles_in_order():
    scorer = SlowFirst()
    completions = [str(i) for i in range(7)]
    with RewardPool(scorer, workers=3, chunk_size=3) as pool:
        results = pool.submit([EX] * 7, completions).result(timeout=5)
    assert sorted(scorer.calls) == [["0", "1", "2"], ["3", "4", "5"], ["6"]]
    assert results == [RewardResult(1.0)] * 7


def test_chunk_size_zero_keeps_one_call(fake):
    with RewardPool(fake, workers=4) as pool:
        pool.submit([EX] * 5, ["a"] * 5).result(timeout=5)
    assert fake.calls == [["a"] * 5]


@pytest.mark.parametrize("workers, low, high", [(4, 0.4, 0.8), (1, 1.6, 3.0)])
def test_at_most_workers_calls_run_at_once(workers, low, high):
    scorer = FakeScorer(delay=0.4)
    with RewardPool(scorer, workers=workers, chunk_size=1) as pool:
        t0 = time.monotonic()
        results = pool.submit([EX] * 4, ["a"] * 4).result(timeout=5)
        elapsed = time.monotonic() - t0
    assert scores(results) == [1.0] * 4
    assert low <= elapsed < high, elapsed


def test_close_is_prompt_and_fails_queued_calls(fake):
    pool = RewardPool(fake, workers=1, timeout_s=30, chunk_size=1)
    running = pool.submit([EX], ["hang"])
    queued = pool.submit([EX] * 2, ["a", "b"])
    while not fake.calls:  # the hanging call has started
        time.sleep(0.01)
    t0 = time.monotonic()
    pool.close()
    pool.close()  # idempotent
    assert time.monotonic() - t0 < 0.5
    assert [r.error for r in queued.result(timeout=1)] == ["reward pool closed"] * 2
    after = pool.submit([EX], ["c"])
    assert [r.error for r in after.result(timeout=1)] == ["reward pool closed"]
    assert not running.done()
    fake.release.set()  # a call running at close still finishes and is delivered
    assert scores(running.result(timeout=5)) == [4.0]
    assert pool.stats()["closed"] == 3


def test_submit_and_wait_from_different_threads():
    scorer = FakeScorer(delay=0.01)
    futures = {}
    with RewardPool(scorer, workers=3, chunk_size=2) as pool:
        def produce(k):
            for i in range(10):
                futures[k, i] = pool.submit([EX] * 3, ["x" * k, "y" * i, "z"])

        threads = [threading.Thread(target=produce, args=(k,)) for k in range(1, 4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got = {key: f.result(timeout=10) for key, f in futures.items()}
    assert len(got) == 30
    assert all(scores(r) == [float(k), float(i), 1.0] for (k, i), r in got.items())


def test_edge_cases(fake):
    with RewardPool(fake, workers=1) as pool:
        assert pool.submit([], []).result(timeout=0) == []
        with pytest.raises(ValueError, match="2 examples but 1 completions"):
            pool.submit([EX, EX], ["a"])
        assert not pool.submit([EX], ["a"]).cancel()  # a submission always resolves
    with pytest.raises(ValueError, match="workers"):
        RewardPool(fake, workers=0)


def test_a_pooled_scorer_scores_with_its_own_scorer_on_the_shared_pool():
    from rft_jax.rewards.pool import PooledScorer, batched  # noqa: PLC0415
    from rft_jax.rewards.scorer import build_reward  # noqa: PLC0415

    main, view = build_reward(RewardSpec("math_answer")), build_reward(RewardSpec("answer_format"))
    examples = [Example(id="a", messages=[{"role": "user", "content": "1+1?"}], reference_answer=2)] * 2
    completions = ["ANSWER: 2", "it is 3"]
    with RewardPool(main, workers=2, timeout_s=5) as pool:
        for scorer in (main, view):  # the view's scores are the view's, not the pool's reward's
            pooled = PooledScorer(scorer, pool)
            assert pooled.score_batch(examples, completions) == scorer.score_batch(examples, completions)
            assert pooled.name == scorer.name and pooled.needs_reference == scorer.needs_reference
    assert not batched(main) and batched(build_reward(RewardSpec("remote", {"url": "http://127.0.0.1:1"})))
    aggregate = build_reward(RewardSpec.aggregate(a=RewardSpec("math_answer"), b=RewardSpec("answer_format")))
    assert not batched(aggregate)
