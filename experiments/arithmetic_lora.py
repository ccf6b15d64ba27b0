"""Default experiment: SmolLM2-135M-Instruct + LoRA learns arithmetic with an `ANSWER: <n>` line.

Command:   python experiments/arithmetic_lora.py      (or: rft-jax train --config experiments/arithmetic_lora.py)
Hardware:  2-core CPU, no GPU; about 30 minutes end to end.
Result:    see the README's before/after table (held-out test split, 200 problems, seed 3).

Sweep:     rft-jax sweep experiments/arithmetic_lora.py    (SWEEP below: 3 learning rates x 3 seeds, 9 runs of
           about 30 minutes each, one at a time on this hardware; --dry-run prints them; docs/sweeps.md)
"""

from __future__ import annotations

import dataclasses
import sys

from rft_jax.data.tasks.prompt import PromptStyle
from rft_jax.grpo import GRPOLossConfig, OptimizerConfig
from rft_jax.model.lora import LoraConfig
from rft_jax.rewards.spec import RewardSpec
from rft_jax.sweep import Sweep, grid
from rft_jax.train.config import DataConfig, EvalConfig, SamplingConfig, TaskData, TrainConfig, WarmStartConfig

STRICT = RewardSpec("math_answer", {"mode": "strict_line"})  # the `ANSWER: <n>` line is right
LOOSE = RewardSpec("math_answer", {"mode": "last_number"})  # the last number is right
FORMAT = RewardSpec("answer_format")  # the line is there

# Loose correctness gives the signal the base model can already earn; the format
# terms reward the required final line, and strict = both at once.
REWARD = RewardSpec.aggregate(loose=dataclasses.replace(LOOSE, weight=0.5),
                              format=dataclasses.replace(FORMAT, weight=0.25),
                              strict=STRICT)

CONFIG = TrainConfig(
    data=DataConfig(task=TaskData(name="arithmetic", levels=("two_operand", "one_step"), num_train=2000, num_val=16, num_test=200,
                                  prompt=PromptStyle(system="You are a careful math assistant. Answer briefly."))),
    reward=REWARD,
    mode="lora",
    lora=LoraConfig(rank=16, alpha=32.0),
    loss=GRPOLossConfig(),
    # LoRA's A starts at PEFT's scale (1/sqrt(3) of the earlier init), so with Adam a step moves W = BA
    # sqrt(3) times less: both learning rates are sqrt(3) x the values this experiment was tuned with.
    optimizer=OptimizerConfig(learning_rate=3.5e-4, warmup_steps=2, weight_decay=0.0),
    sampling=SamplingConfig(samples_per_prompt=8, temperature=0.8, max_new_tokens=64),
    evaluation=EvalConfig(interval=5, views=(("strict", STRICT), ("loose", LOOSE), ("format", FORMAT))),
    warm_start=WarmStartConfig(steps=3, num_demos=64, batch_size=16, learning_rate=1.7e-4),
    batch_size=4,
    max_steps=200,
    time_budget_s=23 * 60,
    out_dir="runs/arithmetic_lora",
)

# The learning rate around the tuned one (x 1/2, x 1, x 2), each with three seeds (runs/sweeps/arithmetic_lora/).
SWEEP = Sweep(arms=grid({"optimizer.learning_rate": [1.75e-4, 3.5e-4, 7e-4]}), seeds=(0, 1, 2))

if __name__ == "__main__":
    from rft_jax.cli.train import cli_with_default  # noqa: PLC0415
    from rft_jax.hugepages import reexec_with_hugepages  # noqa: PLC0415

    reexec_with_hugepages()

    sys.exit(cli_with_default(CONFIG, sys.argv[1:], description=__doc__))
