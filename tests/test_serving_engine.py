"""The continuous-batching engine computes what the batch sampler computes, whoever shares its batch."""

from __future__ import annotations

import threading

import jax
import pytest

from rft_jax.model import init_params
from rft_jax.model.config import ModelConfig
from rft_jax.sampling import SamplingParams, generate_ids
from rft_jax.serving.engine import Engine, EngineConfig, Request

CFG = ModelConfig(vocab_size=96, hidden_size=64, intermediate_size=112, num_layers=2, num_heads=4, num_kv_heads=2,
                  head_dim=16, tie_embeddings=False, max_position_embeddings=256)
EOS = 95


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, jax.random.PRNGKey(0), std=0.5)  # large weights: varied, prompt-dependent output


def run_engine(engine: Engine, requests: list[dict], stagger: int = 0) -> list[tuple[list[int], str]]:
    """Submits requests (every `stagger` engine steps, so later ones join mid-flight); returns tokens + finish."""
    results = [([], None) for _ in requests]
    done = threading.Semaphore(0)

    def emitter(i):
        def emit(token, finish):
            if token is not None:
                results[i][0].append(token)
            else:
                results[i] = (results[i][0], finish)
                done.release()
        return emit

    for i, spec in enumerate(requests):
        target = engine.steps + stagger
        engine.submit(Request(emit=emitter(i), **spec))
        while stagger and engine.steps < target and engine.busy:
            threading.Event().wait(0.005)
    for _ in requests:
        assert done.acquire(timeout=120)
    return results


def test_greedy_matches_the_batch_sampler_with_staggered_arrivals(params):
    prompts = [[5, 9, 13, 2, 77], [1, 2, 3], list(range(10, 40)), [7]]
    engine = Engine(params, CFG, eos_ids=(EOS,), config=EngineConfig(slots=4, max_context=64)).start()
    try:
        got = run_engine(engine, [dict(prompt_ids=p, max_tokens=12, temperature=0.0) for p in prompts], stagger=3)
    finally:
        engine.stop()
    for p, (tokens, finish) in zip(prompts, got):
        ro, _, _ = generate_ids(params, CFG, [p], jax.random.PRNGKey(0), sampling=SamplingParams(0.0), num_samples=1,
                                max_new_tokens=12, eos_ids=(EOS,), pad_id=0)
        n = int(ro.lengths_BxG[0, 0])
        assert tokens == [int(t) for t in ro.tokens_BxGxC[0, 0, :n]]
        assert finish == ("stop" if bool(ro.stopped_BxG[0, 0]) else "length")


def test_seeded_sampling_does_not_depend_on_the_batch(params):
    engine = Engine(params, CFG, eos_ids=(), config=EngineConfig(slots=8, max_context=64)).start()
    try:
        alone = run_engine(engine, [dict(prompt_ids=[3, 4, 5], max_tokens=10, seed=42)])[0][0]
        crowd = [dict(prompt_ids=[i + 1] * (i + 1), max_tokens=10, seed=i) for i in range(6)]
        crowded = run_engine(engine, crowd + [dict(prompt_ids=[3, 4, 5], max_tokens=10, seed=42)])[-1][0]
        other_seed = run_engine(engine, [dict(prompt_ids=[3, 4, 5], max_tokens=10, seed=43)])[0][0]
    finally:
        engine.stop()
    assert alone == crowded and len(alone) == 10
    assert other_seed != alone


def test_context_limit_and_cancel(params):
    engine = Engine(params, CFG, eos_ids=(), config=EngineConfig(slots=2, max_context=32)).start()
    try:
        with pytest.raises(ValueError, match="context"):
            engine.submit(Request(list(range(32)), 4, lambda *a: None))
        (tokens, finish), = run_engine(engine, [dict(prompt_ids=list(range(1, 29)), max_tokens=100)])
        assert len(tokens) == 4 and finish == "length"  # cut to the 32-token context
        req = Request([1, 2], 10_000, lambda *a: None)
        req.cancel()
        finished = run_engine(engine, [dict(prompt_ids=[1, 2], max_tokens=3)])
        assert finished[0][1] == "length"
    finally:
        engine.stop()
    assert engine.busy == 0
