"""The configuration of an `rft-jax sft` run.

Its config.json shares the keys `model.name`, `mode` and `lora` with a GRPO
run's, so `rft-jax eval --checkpoint` and `rft-jax train --init-from` read
either kind of run the same way.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from rft_jax.model.lora import LoraConfig
from rft_jax.model.registry import ModelSpec


@dataclasses.dataclass(frozen=True)
class SFTConfig:
    """Supervised fine-tuning on the final assistant turn of each JSONL example."""

    data: str
    """JSONL whose examples end with an assistant turn (the target)."""
    model: ModelSpec = ModelSpec(compute_dtype="float32")
    mode: Literal["lora", "full"] = "lora"
    lora: LoraConfig = LoraConfig()
    steps: int = 50
    batch_size: int = 16
    learning_rate: float = 1e-4
    seed: int = 0
    max_target_tokens: int = 256
    """Targets are cut to this many tokens (end-of-turn included)."""
    out_dir: str = "runs/sft"
    """Receives config.json, sft_losses.json, checkpoints/latest/STEPS and export/."""
    export_dtype: Literal["float32", "bfloat16"] = "float32"
    """The dtype export/ (model, adapter) is written in: bfloat16 halves it; training stays float32."""
