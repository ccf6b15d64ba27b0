"""Each alarm fires on a synthetic stream showing its failure, and all stay quiet on a healthy run."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rft_jax.monitoring import ALARMS, AlarmConfig, AlarmMonitor, names

STEPS = 120
VAL_EVERY = 10


def healthy(step: int, rng: np.random.Generator) -> dict[str, float]:
    """One step of a run going well: reward and validation rising, everything else steady."""
    t = step / STEPS
    metrics = {
        names.REWARD_MEAN: 0.3 + 0.3 * t + rng.normal(0, 0.03),
        names.ENTROPY: 0.8 - 0.2 * t + rng.normal(0, 0.02),
        names.KL_LOSS: 0.02 * (1 - math.exp(-5 * t)) + abs(rng.normal(0, 0.002)),
        names.RESPONSE_LENGTH_MEAN: 200 + rng.normal(0, 8),
        names.RESPONSE_CLIP_RATIO: 0.02,
        names.ZERO_STD_FRAC: 0.25 + rng.normal(0, 0.03),
        names.reward_component("correct"): 0.3 + 0.3 * t,
        names.reward_component("format"): 0.8,
        names.REWARD_ERRORS: 0.0,
        names.PG_LOSS: rng.normal(0, 0.01),
        names.GRAD_NORM: 0.5,
        names.MISMATCH_KL: abs(rng.normal(0, 1e-4)),
    }
    if step % VAL_EVERY == 0:
        metrics[names.VAL_REWARD_MEAN] = 0.28 + 0.28 * t
    return metrics


def run(override=lambda step, metrics: None, config: AlarmConfig = AlarmConfig()):
    """Feed STEPS healthy steps, letting `override` corrupt each; returns (fired names, events, flags per step)."""
    monitor = AlarmMonitor(config)
    rng = np.random.default_rng(0)
    events, flags_per_step = [], []
    for step in range(1, STEPS + 1):
        metrics = healthy(step, rng)
        override(step, metrics)
        flags, new = monitor.update(step, metrics)
        events += new
        flags_per_step.append(flags)
    fired = {name for flags in flags_per_step for name, v in flags.items() if v}
    return {f[len(names.ALARM_PREFIX) :] for f in fired}, events, flags_per_step


def test_healthy_run_is_quiet():
    fired, events, flags = run()
    assert fired == set() and events == []
    assert set(flags[-1]) == {names.ALARM_PREFIX + name for name in ALARMS}


CASES = {
    "truncation": lambda m, s: m.update({names.RESPONSE_CLIP_RATIO: 0.4}) if s > 60 else None,
    "zero_variance": lambda m, s: m.update({names.ZERO_STD_FRAC: 0.9}) if s > 60 else None,
    "entropy_collapse": lambda m, s: m.update({names.ENTROPY: 0.8 * math.exp(-(s - 40) / 10)}) if s > 40 else None,
    "entropy_explosion": lambda m, s: m.update({names.ENTROPY: 0.8 + 0.05 * (s - 40)}) if s > 40 else None,
    "kl_growth": lambda m, s: m.update({names.KL_LOSS: 0.01 * math.exp(s / 30)}),
    "reward_hacking": lambda m, s: (
        m.update({names.REWARD_MEAN: 0.3 + 0.5 * s / STEPS})
        or (m.update({names.VAL_REWARD_MEAN: 0.5 - 0.05 * (s - 80) / 10}) if s >= 80 and names.VAL_REWARD_MEAN in m else None)
    ),
    "length_drift": lambda m, s: m.update({names.RESPONSE_LENGTH_MEAN: 200 + 4 * s}),
    "component_dominance": lambda m, s: m.update({names.reward_component("correct"): 0.0, names.reward_component("format"): 1.0}),
    "reward_errors": lambda m, s: m.update({names.REWARD_ERRORS: 0.2}) if s > 60 else None,
    "mismatch": lambda m, s: m.update({names.MISMATCH_KL: 0.01}) if s > 60 else None,
    "non_finite": lambda m, s: m.update({names.PG_LOSS: float("nan")}) if s == 100 else None,
}


def test_every_alarm_has_a_case():
    assert set(CASES) == set(ALARMS)


@pytest.mark.parametrize("alarm", sorted(CASES))
def test_alarm_fires_alone_and_is_announced_once(alarm):
    fired, events, _ = run(lambda step, metrics: CASES[alarm](metrics, step))
    assert fired == {alarm}
    assert [e.name for e in events] == [alarm]
    assert events[0].fix == ALARMS[alarm].fix and events[0].message


def test_flag_recorded_every_step_it_fires():
    _, events, flags = run(lambda step, metrics: CASES["truncation"](metrics, step))
    series = [f[names.ALARM_PREFIX + "truncation"] for f in flags]
    assert series[50] == 0.0 and series[-1] == 1.0
    assert sum(series) > 30 and len(events) == 1
    assert 60 < events[0].step <= 70  # smoothed over AlarmConfig.window steps
    assert "hit the length limit" in events[0].format()


def test_non_finite_flag_clears_after_the_bad_step():
    _, _, flags = run(lambda step, metrics: CASES["non_finite"](metrics, step))
    series = [f[names.ALARM_PREFIX + "non_finite"] for f in flags]
    assert series[99] == 1.0 and sum(series) == 1.0


def test_thresholds_come_from_the_config():
    override = lambda step, metrics: metrics.update({names.RESPONSE_CLIP_RATIO: 0.3})  # noqa: E731
    assert "truncation" in run(override)[0]
    assert "truncation" not in run(override, AlarmConfig(max_clip_ratio=0.5))[0]


def test_hacking_needs_val_falling_not_just_flat():
    flat_val = lambda step, metrics: metrics.update({names.VAL_REWARD_MEAN: 0.4}) if names.VAL_REWARD_MEAN in metrics else None  # noqa: E731
    assert "reward_hacking" not in run(flat_val)[0]


def test_the_mismatch_alarm_keeps_quiet_about_an_asynchronous_runs_intended_lag():
    def stale(step, m):  # episodes one version old: the KL holds the lag, which the IS weights correct
        m.update({names.MISMATCH_KL: 0.01, names.STALENESS_MEAN: 1.0})

    assert "mismatch" not in run(stale)[0]
