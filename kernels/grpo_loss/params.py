"""The GRPO-loss settings the kernel reads, as its own small frozen type.

kernels/ never imports the application, so the kernel does not take
rft_jax's `GRPOLossConfig`; `LossParams.from_config` copies the fields it
needs from any object that has them (that config included). Frozen, hence
hashable: it is a static argument of the custom VJP and of the Pallas kernel.
"""

from __future__ import annotations

import dataclasses

from kernels.grpo_loss.reference import AGGREGATIONS, KL_ESTIMATORS


@dataclasses.dataclass(frozen=True)
class LossParams:
    """Symbols as in reference.py: ε_low, ε_high, β, the KL estimator k, the weights w, c_H."""

    epsilon_low: float = 0.2
    epsilon_high: float = 0.28
    beta: float = 0.0
    kl_estimator: str = "k3"
    aggregation: str = "token-mean"
    norm_length: int | None = None
    """L_norm of `seq-mean-token-sum-norm`; None = the padded length C."""
    entropy_coef: float = 0.0
    mask_truncated: bool = False
    """Drop the tokens of completions marked truncated from the loss."""

    def __post_init__(self):
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator {self.kl_estimator!r} not in {sorted(KL_ESTIMATORS)}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation {self.aggregation!r} not in {sorted(AGGREGATIONS)}")

    @classmethod
    def from_config(cls, cfg) -> LossParams:
        """The kernel's fields of `cfg` (e.g. rft_jax's GRPOLossConfig); a LossParams is returned as is."""
        if isinstance(cfg, cls):
            return cfg
        # The kernel computes the PPO-clip surrogate only: refuse settings it would silently ignore.
        unsupported = {"policy_loss": "ppo_clip", "clip_ratio_c": None}
        for name, supported in unsupported.items():
            if getattr(cfg, name, supported) != supported:
                raise ValueError(f"the fused GRPO loss kernel computes ppo_clip without dual-clip; "
                                 f"{name}={getattr(cfg, name)!r} needs the reference loss (rft_jax.grpo.grpo_loss)")
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})
