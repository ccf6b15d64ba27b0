"""`rft-jax sft`: supervised fine-tuning on the final assistant turn of each JSONL example.

The run directory is laid out like an RFT run's (config.json, checkpoints/,
export/ with an HF folder and, for LoRA, a PEFT adapter), so
`rft-jax train --config ... --init-from OUT` continues from it with RL and
`rft-jax eval --checkpoint OUT` evaluates it.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Literal

import tyro

from rft_jax.model.lora import LoraConfig
from rft_jax.model.registry import DEFAULT_MODEL, ModelSpec
from rft_jax.sft.config import SFTConfig


@dataclasses.dataclass(frozen=True)
class SFTOptions:
    """The flat command line of `rft-jax sft`; `build()` gives the SFTConfig it stands for."""

    data: str
    """JSONL whose examples end with an assistant turn (the target)."""
    model: str = DEFAULT_MODEL
    """Registry key, Hugging Face folder or .gguf file to fine-tune."""
    mode: Literal["lora", "full"] = "lora"
    """lora: train LoRA adapters on the frozen base; full: train every weight."""
    rank: int = 16
    """LoRA rank R."""
    alpha: float = 32.0
    """LoRA alpha (the update is scaled by alpha / R)."""
    steps: int = 50
    """Optimizer steps."""
    batch_size: int = 16
    """Examples per step."""
    lr: float = 1e-4
    """Learning rate."""
    seed: int = 0
    """Seed of the data order and the LoRA initialisation."""
    out: str = "runs/sft"
    """Run directory (config.json, checkpoints/, export/)."""
    export_dtype: Literal["float32", "bfloat16"] = "float32"
    """The dtype export/ is written in (bfloat16: half the size)."""

    def build(self) -> SFTConfig:
        return SFTConfig(data=self.data, model=ModelSpec(name=self.model, compute_dtype="float32"), mode=self.mode,
                         lora=LoraConfig(rank=self.rank, alpha=self.alpha), steps=self.steps,
                         batch_size=self.batch_size, learning_rate=self.lr, seed=self.seed, out_dir=self.out,
                         export_dtype=self.export_dtype)


def main(argv: list[str]) -> int:
    cfg = tyro.cli(SFTOptions, args=argv, prog="rft-jax sft", description=__doc__).build()

    from rft_jax.sft.run import run_sft  # noqa: PLC0415 (keeps --help fast)

    try:
        losses = run_sft(cfg)
    except (ValueError, FileNotFoundError) as err:
        print(f"rft-jax sft: {err}", file=sys.stderr)
        return 2
    print(f"SFT loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} steps; run directory {cfg.out_dir}. "
          f"Continue with RL: rft-jax train ... --init-from {cfg.out_dir}")
    return 0
