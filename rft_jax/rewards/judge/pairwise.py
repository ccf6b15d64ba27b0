"""Pairwise judging: preferences between completions turned into per-completion scores.

For subjective tasks a judge ranks more reliably than it scores on an absolute
scale. Each completion is compared with the other completions of its group
(`against="group"`, G(G-1)/2 pairs) or with the example's reference answer
(`against="reference"`). Asking each pair in both orders cancels the judge's
bias for the first (or second) position. A completion's score is its mean
credit: 1 per win, 0.5 per tie, 0 per loss, a win rate in [0, 1].
"""

from __future__ import annotations

import dataclasses

from rft_jax.rewards.judge.rubric import Rubric

PAIR_VERDICT = Rubric("pairwise verdict", labels=(("A", 1.0), ("B", 0.0), ("tie", 0.5)))

REFERENCE = -1  # stands for the reference answer in a comparison


@dataclasses.dataclass(frozen=True)
class Comparison:
    first: int  # index of the completion shown as A (or REFERENCE)
    second: int  # shown as B


def group_comparisons(members: list[int], both_orders: bool) -> list[Comparison]:
    pairs = [(a, b) for i, a in enumerate(members) for b in members[i + 1:]]
    out = [Comparison(a, b) for a, b in pairs]
    return out + [Comparison(b, a) for a, b in pairs] if both_orders else out


def reference_comparisons(index: int, both_orders: bool) -> list[Comparison]:
    out = [Comparison(index, REFERENCE)]
    return out + [Comparison(REFERENCE, index)] if both_orders else out


def win_rates(n_items: int, outcomes: list[tuple[Comparison, float | None]]) -> list[tuple[float | None, int]]:
    """(mean credit, comparisons counted) per completion; `p` is the preference for A, None if unreadable."""
    credit, counted = [0.0] * n_items, [0] * n_items
    for cmp, p in outcomes:
        if p is None:
            continue
        for index, share in ((cmp.first, p), (cmp.second, 1.0 - p)):
            if index != REFERENCE:
                credit[index] += share
                counted[index] += 1
    return [(credit[i] / counted[i] if counted[i] else None, counted[i]) for i in range(n_items)]
