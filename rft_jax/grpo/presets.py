"""Named algorithm recipes: the advantage estimator and loss settings of a paper, as data.

A preset is the pair (AdvantageConfig, GRPOLossConfig) a paper trains with,
plus whether it uses DAPO's dynamic sampling (dropping groups with no reward
variance, a trainer setting). Anything not listed keeps the config default.
`apply_preset(name)` builds the two configs; override fields afterwards with
`dataclasses.replace`.

| preset    | advantage | policy loss (ε_low, ε_high)   | aggregation             | other                     |
|-----------|-----------|-------------------------------|-------------------------|---------------------------|
| `grpo`    | grpo      | ppo_clip (0.2, 0.2)           | seq-mean-token-mean     | β = 0.04, k3              |
| `dapo`    | grpo      | ppo_clip (0.2, 0.28)          | token-mean              | overlong buffer, dynamic sampling |
| `dr_grpo` | drgrpo    | ppo_clip (0.2, 0.2)           | seq-mean-token-sum-norm | L_norm = generation budget |
| `gspo`    | grpo      | gspo (3e-4, 4e-4)             | seq-mean-token-mean     |                           |
| `cispo`   | grpo      | cispo (1.0: no lower, 3.0)    | token-mean              |                           |
| `sapo`    | grpo      | sapo (τ_pos 1.0, τ_neg 1.05)  | token-mean              |                           |
| `rloo`    | rloo      | ppo_clip (0.2, 0.2)           | token-mean              |                           |

β = 0 (no reference model) wherever not given. Sources (arXiv): GRPO, DeepSeekMath
2402.03300; DAPO 2503.14476; Dr.GRPO 2503.20783; GSPO 2507.18071; CISPO,
MiniMax-M1 2506.13585; SAPO 2511.20347; RLOO 2402.14740 (also `Preset.source`).

Notes on the values:
- DAPO trains with L_max = 20480 generated tokens, of which the last
  L_cache = 4096 are the soft-overlong buffer; `apply_preset(..., max_new_tokens=N)`
  keeps that 20% ratio for a smaller budget (4096 when N is not given).
- Dr.GRPO leaves `norm_length` None: the train step then uses the generation
  budget (`StepSettings.max_new_tokens`) as its constant L_norm.
- GSPO's clip range is on the sequence ratio, which stays close to 1, hence
  ranges four orders of magnitude smaller than PPO's.
- MiniMax-M1 sets no lower bound on CISPO's IS weight and does not publish its
  ε_high; 3.0 caps the weight at 4, the default of Tinker's CISPO loss (whose
  documentation cites ScaleRL, arXiv 2510.13786). Tune it.
- RLOO's paper is on-policy REINFORCE (one pass, so r = 1 and the clip is
  inactive); the loss settings are verl's defaults for its `rloo` estimator.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from rft_jax.grpo.advantages import AdvantageConfig
from rft_jax.grpo.loss import GRPOLossConfig

# DAPO (arXiv 2503.14476): L_cache = 4096 of L_max = 20480.
DAPO_OVERLONG_BUFFER, DAPO_MAX_LEN = 4096, 20480


class Preset(NamedTuple):
    """Keyword arguments of AdvantageConfig and GRPOLossConfig, and the trainer's dynamic-sampling switch."""

    advantage: dict
    loss: dict
    dynamic_sampling: bool
    source: str


PRESETS: dict[str, Preset] = {
    "grpo": Preset(
        dict(estimator="grpo"),
        dict(epsilon_low=0.2, epsilon_high=0.2, beta=0.04, kl_estimator="k3", aggregation="seq-mean-token-mean"),
        False, "DeepSeekMath, arXiv 2402.03300"),
    "dapo": Preset(
        dict(estimator="grpo", overlong_buffer_len=DAPO_OVERLONG_BUFFER, overlong_penalty_factor=1.0),
        dict(epsilon_low=0.2, epsilon_high=0.28, beta=0.0, aggregation="token-mean"),
        True, "DAPO, arXiv 2503.14476"),
    "dr_grpo": Preset(
        dict(estimator="drgrpo"),
        dict(epsilon_low=0.2, epsilon_high=0.2, beta=0.0, aggregation="seq-mean-token-sum-norm"),
        False, "Dr.GRPO, arXiv 2503.20783"),
    "gspo": Preset(
        dict(estimator="grpo"),
        dict(policy_loss="gspo", epsilon_low=3e-4, epsilon_high=4e-4, beta=0.0, aggregation="seq-mean-token-mean"),
        False, "GSPO, arXiv 2507.18071"),
    "cispo": Preset(
        dict(estimator="grpo"),
        dict(policy_loss="cispo", epsilon_low=1.0, epsilon_high=3.0, beta=0.0, aggregation="token-mean"),
        False, "MiniMax-M1, arXiv 2506.13585 (ε_high: Tinker's default cap r <= 4)"),
    "sapo": Preset(
        dict(estimator="grpo"),
        dict(policy_loss="sapo", sapo_tau_pos=1.0, sapo_tau_neg=1.05, beta=0.0, aggregation="token-mean"),
        False, "SAPO, arXiv 2511.20347"),
    "rloo": Preset(
        dict(estimator="rloo"),
        dict(epsilon_low=0.2, epsilon_high=0.2, beta=0.0, aggregation="token-mean"),
        False, "RLOO, arXiv 2402.14740"),
}


def apply_preset(name: str, max_new_tokens: int | None = None) -> tuple[AdvantageConfig, GRPOLossConfig]:
    """(AdvantageConfig, GRPOLossConfig) of preset `name`. `max_new_tokens` scales DAPO's overlong buffer to
    the same share of a smaller generation budget."""
    if name not in PRESETS:
        raise ValueError(f"preset {name!r} not in {sorted(PRESETS)}")
    preset = PRESETS[name]
    advantage = AdvantageConfig(**preset.advantage)
    if advantage.overlong_buffer_len and max_new_tokens is not None:
        buffer = max(1, advantage.overlong_buffer_len * max_new_tokens // DAPO_MAX_LEN)
        advantage = dataclasses.replace(advantage, overlong_buffer_len=buffer)
    return advantage, GRPOLossConfig(**preset.loss)
