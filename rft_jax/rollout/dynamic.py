"""DAPO's dynamic sampling: train only on groups whose rewards disagree.

A group whose G rewards are all equal has zero advantage everywhere: it
teaches nothing, yet it still counts in token-mean denominators and costs a
forward and backward. Dynamic sampling (DAPO, arXiv 2503.14476) drops such
groups and samples further prompts until the batch is full of groups with a
signal, or a cap on extra rounds is hit. The batch keeps its shape (a jitted,
sharded step wants one): when the cap is hit, dropped groups fill the gap and
`pack_groups(..., active_B=...)` takes them out of the loss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from rft_jax.rollout.engine import Rollouts
from rft_jax.rollout.episode import Episode


def has_signal(group: list[Episode]) -> bool:
    """Rewards that are not all equal (exact test: a group of equal floats has zero advantage)."""
    return any(e.reward != group[0].reward for e in group)


@dataclasses.dataclass
class Filled:
    rollouts: Rollouts  # exactly `batch_size` groups
    active_B: np.ndarray  # bool [batch_size]: groups with a signal (the rest are fillers, out of the loss)
    metrics: dict[str, float]


def fill_with_signal(first: Rollouts, more: Callable[[int], Rollouts], batch_size: int, max_rounds: int) -> Filled:
    """Keeps `first`'s groups with a signal and calls `more(round)` (round 1, 2, ...) for further groups
    until `batch_size` of them have a signal or `max_rounds` extra rounds are spent."""
    keep = [g for g in first.groups if has_signal(g)]
    dropped = [g for g in first.groups if not has_signal(g)]
    timing = dict(first.timing)
    rounds = drawn = 0
    while len(keep) < batch_size and rounds < max_rounds:
        rounds += 1
        extra = more(rounds)
        drawn += len(extra.groups)
        keep += [g for g in extra.groups if has_signal(g)]
        dropped += [g for g in extra.groups if not has_signal(g)]
        timing = {k: timing.get(k, 0.0) + v for k, v in extra.timing.items()}
    keep = keep[:batch_size]
    fillers = dropped[:batch_size - len(keep)]
    active = np.array([True] * len(keep) + [False] * len(fillers))
    metrics = {"dynamic/extra_rounds": float(rounds), "dynamic/extra_prompts": float(drawn),
               "dynamic/signal_groups": float(len(keep)), "dynamic/filler_groups": float(len(fillers)),
               "dynamic/zero_std_frac_first": float(np.mean([not has_signal(g) for g in first.groups]))}
    return Filled(Rollouts(keep + fillers, timing), active, metrics)
