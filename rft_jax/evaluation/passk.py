"""pass@k and the per-prompt sample statistics that decide whether a task is ready for RFT.

GRPO learns only from prompt groups whose G samples score differently, so the
numbers that matter before training are about groups: how often at least one of
k samples succeeds (pass@k, the ceiling RL can pull pass@1 toward), and how many
prompts give all-equal scores (no advantage, no gradient).

Arrays are [P, G]: P prompts, G samples per prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

LENGTH_PERCENTILES = (50, 90, 99)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c succeeded (Chen et al. 2021, the Codex paper).

    1 - C(n-c, k) / C(n, k), computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i): the
    binomials overflow floats for n in the hundreds, the product never does.
    """
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every k-subset contains a success
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def mean_pass_at_k(successes_PxG: np.ndarray, k: int) -> float:
    """pass@k averaged over prompts, from boolean successes."""
    successes_PxG = np.asarray(successes_PxG, dtype=bool)
    n = successes_PxG.shape[1]
    return float(np.mean([pass_at_k(n, int(c), k) for c in successes_PxG.sum(axis=1)]))


def default_ks(group_size: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to the group size, and the group size itself."""
    ks = [1 << i for i in range(group_size.bit_length()) if 1 << i <= group_size]
    return tuple(sorted(set(ks + [group_size])))


@dataclass(frozen=True)
class EvalSummary:
    """What an evaluation of P prompts x G samples says about the task and the model."""

    num_prompts: int
    group_size: int
    pass_at_k: dict[int, float]
    """Unbiased pass@k for each k; pass_at_k[1] is the sampled success rate."""
    reward_mean: float
    reward_std: float
    reward_within_prompt_std: float
    """Mean over prompts of the std of its G rewards: the raw material of GRPO advantages."""
    constant_share: float
    """Share of prompts whose G samples all score the same (zero advantage)."""
    any_success_share: float
    """Share of prompts with at least one successful sample among G."""
    greedy_pass_at_1: float | None = None
    format_compliance: float | None = None
    truncation_rate: float | None = None
    error_rate: float | None = None
    length_percentiles: dict[int, float] = field(default_factory=dict)

    def to_metrics(self) -> dict[str, float]:
        """Flat `name -> number` dict, the `metrics` of an eval_*.json file (docs/monitoring.md)."""
        metrics: dict[str, float] = {"num_prompts": self.num_prompts, "group_size": self.group_size}
        metrics.update({f"pass@{k}": v for k, v in self.pass_at_k.items()})
        optional = {
            "greedy/pass@1": self.greedy_pass_at_1,
            "format/compliance": self.format_compliance,
            "response_length/clip_ratio": self.truncation_rate,
            "reward/errors": self.error_rate,
        }
        metrics.update({
            "reward/mean": self.reward_mean,
            "reward/std": self.reward_std,
            "reward/within_prompt_std": self.reward_within_prompt_std,
            "prompts/constant_frac": self.constant_share,
            "prompts/any_success_frac": self.any_success_share,
        })
        metrics.update({k: v for k, v in optional.items() if v is not None})
        metrics.update({f"response_length/p{p}": v for p, v in self.length_percentiles.items()})
        return metrics


def _share(flags: np.ndarray | Sequence | None) -> float | None:
    return None if flags is None else float(np.mean(np.asarray(flags, dtype=bool)))


def summarize_samples(
    rewards_PxG: np.ndarray | Sequence[Sequence[float]],
    *,
    success_threshold: float = 1.0,
    greedy_rewards_P: np.ndarray | Sequence[float] | None = None,
    lengths_PxG: np.ndarray | Sequence[Sequence[int]] | None = None,
    truncated_PxG: np.ndarray | Sequence[Sequence[bool]] | None = None,
    format_ok_PxG: np.ndarray | Sequence[Sequence[bool]] | None = None,
    errors_PxG: np.ndarray | Sequence[Sequence[bool]] | None = None,
    ks: Sequence[int] | None = None,
    tie_tolerance: float = 1e-9,
) -> EvalSummary:
    """Summarize sampled rewards (and optional greedy rewards, lengths, flags) per prompt.

    A sample succeeds when its reward >= `success_threshold` (1.0 suits 0/1 and
    partial-credit rewards whose full marks are 1). Format compliance is given
    only when a reward component reports it (`format_ok_PxG`).
    """
    rewards_PxG = np.asarray(rewards_PxG, dtype=np.float64)
    if rewards_PxG.ndim != 2 or rewards_PxG.size == 0:
        raise ValueError(f"rewards must be a non-empty [prompts, samples] array, got shape {rewards_PxG.shape}")
    num_prompts, group_size = rewards_PxG.shape
    successes_PxG = rewards_PxG >= success_threshold
    ks = default_ks(group_size) if ks is None else tuple(sorted({1, *(k for k in ks if 1 <= k <= group_size)}))
    greedy = None
    if greedy_rewards_P is not None:
        greedy = float(np.mean(np.asarray(greedy_rewards_P, dtype=np.float64) >= success_threshold))
    percentiles: dict[int, float] = {}
    if lengths_PxG is not None:
        lengths = np.asarray(lengths_PxG, dtype=np.float64).ravel()
        percentiles = {p: float(np.percentile(lengths, p)) for p in LENGTH_PERCENTILES}
    return EvalSummary(
        num_prompts=num_prompts,
        group_size=group_size,
        pass_at_k={k: mean_pass_at_k(successes_PxG, k) for k in ks},
        reward_mean=float(rewards_PxG.mean()),
        reward_std=float(rewards_PxG.std()),
        reward_within_prompt_std=float(rewards_PxG.std(axis=1).mean()),
        constant_share=float(np.mean(np.ptp(rewards_PxG, axis=1) <= tie_tolerance)),
        any_success_share=float(np.mean(successes_PxG.any(axis=1))),
        greedy_pass_at_1=greedy,
        format_compliance=_share(format_ok_PxG),
        truncation_rate=_share(truncated_PxG),
        error_rate=_share(errors_PxG),
        length_percentiles=percentiles,
    )
