"""Alarms: the known ways a GRPO run goes wrong, each a small check over the metric stream.

A check takes the history and the thresholds and returns a one-line reason when
it fires (None when quiet). `ALARMS` pairs each check with the fix to suggest;
adding an alarm is one function and one table row. Checks smooth over
`AlarmConfig.window` steps, because per-step RL metrics are noisy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from rft_jax.monitoring import names
from rft_jax.monitoring.history import MetricHistory, is_bad


@dataclass(frozen=True)
class AlarmConfig:
    """Alarm thresholds. Defaults suit 0/1-style rewards and a few hundred steps."""

    window: int = 10
    """Steps averaged before a value is compared with its threshold."""
    max_clip_ratio: float = 0.10
    """Truncation: share of responses cut at max_new_tokens (`response_length/clip_ratio`)."""
    max_zero_std_frac: float = 0.50
    """Zero variance: share of prompt groups with all G rewards equal (no advantage, no gradient)."""
    entropy_baseline_steps: int = 5
    """Entropy at the start is the mean of this many first steps."""
    entropy_collapse_frac: float = 0.10
    """Entropy collapse: entropy below this fraction of its start."""
    entropy_explosion_factor: float = 3.0
    """Entropy explosion: entropy above this multiple of its start."""
    kl_ceiling: float = 1.0
    """KL to the reference above this (nats/token, smoothed) fires at once."""
    kl_growth_window: int = 50
    """Steps over which KL growth is judged."""
    kl_growth_factor: float = 2.0
    """KL growth: the window's last quarter is this many times its first quarter..."""
    kl_floor: float = 0.1
    """...and above this (early KL from ~0 always 'doubles')."""
    trend_corr: float = 0.9
    """A trend counts as steady when |corr(step, value)| exceeds this."""
    hacking_val_points: int = 3
    """Reward hacking: validation fell over this many consecutive evaluations..."""
    hacking_min_delta: float = 0.02
    """...by at least this much, while the training reward rose by at least this much."""
    length_window: int = 50
    """Steps over which response-length drift is judged."""
    length_drift_frac: float = 0.5
    """Length drift: mean length changed by this fraction of its value, steadily."""
    dominance_share: float = 0.9
    """One reward component carries this share of the summed |component means|."""
    max_reward_error_rate: float = 0.05
    """Reward errors: share of completions whose reward raised (`reward/errors`)."""
    max_mismatch_kl: float = 1e-3
    """Train/inference mismatch: KL(sampler || trainer) per token on the sampled tokens (`mismatch/kl`)."""


Check = Callable[[MetricHistory, AlarmConfig], "str | None"]


class Alarm(NamedTuple):
    check: Check
    fix: str


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan


def _steady(steps: np.ndarray, values: np.ndarray, min_corr: float) -> float:
    """The correlation of value with step when it is at least `min_corr` in size, else 0."""
    if values.size < 3 or values.std() == 0 or steps.std() == 0:
        return 0.0
    corr = float(np.corrcoef(steps, values)[0, 1])
    return corr if abs(corr) >= min_corr else 0.0


def truncation(h: MetricHistory, cfg: AlarmConfig) -> str | None:
    rate = _mean(h.recent(names.RESPONSE_CLIP_RATIO, cfg.window))
    if rate > cfg.max_clip_ratio:
        return f"{rate:.0%} of responses hit the length limit (threshold {cfg.max_clip_ratio:.0%})"
    return None


def zero_variance(h: MetricHistory, cfg: AlarmConfig) -> str | None:
    share = _mean(h.recent(names.ZERO_STD_FRAC, cfg.window))
    if share > cfg.max_zero_std_frac:
        return f"{share:.0%} of prompt groups have identical rewards, so no gradient (threshold {cfg.max_zero_std_frac:.0%})"
    return None


def _entropy_ratio(h: MetricHistory, cfg: AlarmConfig) -> float:
    """Current (smoothed) entropy over its value at the start; NaN until both exist."""
    values = h.series(names.ENTROPY)[1]
    if values.size <= cfg.entropy_baseline_steps:
        return math.nan
    start = _mean(values[: cfg.entropy_baseline_steps])
    now = _mean(values[cfg.entropy_baseline_steps :][-cfg.window :])
    return now / start if start > 0 else math.nan


def entropy_collapse(h: MetricHistory, cfg: AlarmConfig) -> str | None:
    ratio = _entropy_ratio(h, cfg)
    if ratio < cfg.entropy_collapse_frac:
        return f"entropy fell to {ratio:.0%} of its start: the policy stopped exploring"
    return None


def entropy_explosion(h: MetricHistory, cfg: AlarmConfig) -> str | None:
    ratio = _entropy_ratio(h, cfg)
    if ratio > cfg.entropy_explosion_factor:
        return f"entropy rose to {ratio:.1f}x its start: outputs are turning into noise"
    return None


def kl_growth(h: MetricHistory, cfg: AlarmConfig) -> str | None:
    steps, values = h.series(names.KL_LOSS)
    if values.size == 0:  # beta = 0: no KL term, but the monitor measures the KL every N steps
        steps, values = h.series(names.REF_KL)
    now = _mean(values[-cfg.window :])
    if now > cfg.kl_ceiling:
        return f"KL to the reference is {now:.3g}, above the ceiling {cfg.kl_ceiling:g}"
    if values.size < cfg.kl_growth_window:
        return None
    steps, values = steps[-cfg.kl_growth_window :], values[-cfg.kl_growth_window :]
    quarter = max(1, values.size // 4)
    first, last = _mean(values[:quarter]), _mean(values[-quarter:])
    growing = _steady(steps, values, cfg.trend_corr) > 0
    if growing and last > cfg.kl_floor and last > cfg.kl_growth_factor * first:
        return f"KL to the reference rose steadily from {first:.3g} to {last:.3g} over {values.size} steps"
    return None


def reward_hacking(h: MetricHistory, cfg: AlarmConfig) -> str | None:
    val_steps, val = h.series(names.VAL_REWARD_MEAN)
    n = cfg.hacking_val_points
    if val.size < n:
        return None
    val_steps, val = val_steps[-n:], val[-n:]
    if np.any(np.diff(val) > 0) or val[0] - val[-1] < cfg.hacking_min_delta:
        return None
    steps, train = h.series(names.REWARD_MEAN)
    inside = (steps >= val_steps[0]) & (steps <= val_steps[-1])
    if inside.sum() < 2 or np.ptp(steps[inside]) == 0:
        return None
    slope = np.polyfit(steps[inside], train[inside], 1)[0]
    rise = slope * (val_steps[-1] - val_steps[0])
    if rise >= cfg.hacking_min_delta:
        return (
            f"training reward rose by {rise:.3g} while validation reward fell "
            f"{val[0]:.3g} -> {val[-1]:.3g} over steps {val_steps[0]}-{val_steps[-1]}"
        )
    return None


def length_drift(h: MetricHistory, cfg: AlarmConfig) -> str | None:
    steps, values = h.series(names.RESPONSE_LENGTH_MEAN)
    if values.size < cfg.length_window:
        return None
    steps, values = steps[-cfg.length_window :], values[-cfg.length_window :]
    quarter = max(1, values.size // 4)
    first, last = _mean(values[:quarter]), _mean(values[-quarter:])
    change = (last - first) / max(first, 1.0)
    if abs(change) > cfg.length_drift_frac and _steady(steps, values, cfg.trend_corr) != 0:
        direction = "grew" if change > 0 else "shrank"
        return f"mean response length {direction} steadily {first:.0f} -> {last:.0f} tokens over {values.size} steps"
    return None


def component_dominance(h: MetricHistory, cfg: AlarmConfig) -> str | None:
    prefix, suffix = names.REWARD_COMPONENT_PREFIX, "/mean"
    components = [n for n in h.names() if n.startswith(prefix) and n.endswith(suffix)]
    if len(components) < 2:
        return None
    means = {c[len(prefix) : -len(suffix)]: abs(_mean(h.recent(c, cfg.window))) for c in components}
    means = {c: m for c, m in means.items() if math.isfinite(m)}
    total = sum(means.values())
    if total <= 0:
        return None
    top = max(means, key=means.__getitem__)
    share = means[top] / total
    if share > cfg.dominance_share:
        return f"reward component {top!r} is {share:.0%} of the summed component rewards"
    return None


def reward_errors(h: MetricHistory, cfg: AlarmConfig) -> str | None:
    rate = _mean(h.recent(names.REWARD_ERRORS, cfg.window))
    if rate > cfg.max_reward_error_rate:
        return f"{rate:.1%} of rewards raised an error (threshold {cfg.max_reward_error_rate:.0%})"
    return None


def mismatch(h: MetricHistory, cfg: AlarmConfig) -> str | None:
    if _mean(h.recent(names.STALENESS_MEAN, cfg.window)) > 0:  # asynchronous: the KL also holds the intended lag
        return None
    kl = _mean(h.recent(names.MISMATCH_KL, cfg.window))
    if kl > cfg.max_mismatch_kl:
        return (f"the sampler's log-probs differ from the trainer's: KL {kl:.2g} nats/token "
                f"(threshold {cfg.max_mismatch_kl:g}), so the update is off-policy")
    return None


_MUST_BE_FINITE = (names.PG_LOSS, names.GRAD_NORM, names.KL_LOSS, names.ENTROPY, names.REWARD_MEAN)


def non_finite(h: MetricHistory, cfg: AlarmConfig) -> str | None:
    bad = [name for name in _MUST_BE_FINITE if is_bad(h.latest(name))]
    return f"non-finite values in {', '.join(bad)}" if bad else None


ALARMS: dict[str, Alarm] = {
    "truncation": Alarm(
        truncation,
        "raise max_new_tokens, or add a length penalty / an instruction to be brief; truncated answers score 0 and teach nothing",
    ),
    "zero_variance": Alarm(
        zero_variance,
        "drop prompts the model always or never solves (filter by baseline pass rate), raise the group size G, or use a graded reward",
    ),
    "entropy_collapse": Alarm(
        entropy_collapse,
        "lower the learning rate, raise the sampling temperature, raise clip_high (DAPO), or add a small entropy bonus",
    ),
    "entropy_explosion": Alarm(
        entropy_explosion,
        "lower the learning rate, tighten gradient clipping, or raise beta (KL to the reference); check the newest checkpoint's samples",
    ),
    "kl_growth": Alarm(
        kl_growth,
        "raise beta, lower the learning rate, or stop at an earlier checkpoint; read samples for drift away from the base style",
    ),
    "reward_hacking": Alarm(
        reward_hacking,
        "read the top-reward rollouts for a loophole in the reward, tighten the grader, and keep the checkpoint with the best validation score",
    ),
    "length_drift": Alarm(
        length_drift,
        "if longer reasoning is intended, ignore; otherwise check for padding/rambling or empty answers, and consider a length penalty",
    ),
    "component_dominance": Alarm(
        component_dominance,
        "rebalance the reward component weights so the task component carries the signal (e.g. shrink a format bonus)",
    ),
    "reward_errors": Alarm(
        reward_errors,
        "run `rft-jax reward test` on a few completions and fix the grader; errored completions are scored 0 and bias training",
    ),
    "mismatch": Alarm(
        mismatch,
        "sample without top-k/top-p (they change the sampled distribution), sample in float32 (compute_dtype), "
        "or take several passes (ppo_epochs > 1 recomputes the old log-probs with the training forward)",
    ),
    "non_finite": Alarm(
        non_finite,
        "lower the learning rate, enable gradient clipping, check for float16 overflow; resume from the last good checkpoint",
    ),
}
