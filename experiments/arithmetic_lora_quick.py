"""Quick preset of the default experiment, for sweeps: the same task, model, reward and learning rates, smaller.

Command:   python experiments/arithmetic_lora_quick.py      (or: rft-jax train --config experiments/arithmetic_lora_quick.py)
Hardware:  2-core CPU, no GPU; at most 8 minutes end to end: measured 7.2 min (the run's wall time; 7.4 min for
           the whole command) on 2026-12-03, this project's 2-vCPU machine, with another engineer's tests on the
           same cores for about 3 of those minutes (load average up to 4.8), so RL got 4 steps.
Result:    held-out test split (100 problems, seed 3), greedy: strict 0% (base) -> 1% (warm start) -> 30%
           (after 4 RL steps); format 0% -> 3% -> 94%; loose 35% -> 37% -> 31%.

What it changes from experiments/arithmetic_lora.py (read from there, so the two stay in sync): 48
demonstrations for the warm start's 3 steps (the default generates 64), a time budget of 6.5 minutes (like
the default's, it counts the whole run: evaluations and warm start too, so RL gets what they leave) capped
at 30 RL steps, 8 validation problems, a 100-problem test split (seed 3, as the default's; one answer is 1
point) and no export. The final evaluation comes after the budget, so the run ends about a minute after it.
Use it to rank settings against each other, not for the default experiment's figures.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from rft_jax.cli.train import load_experiment

DEFAULT = load_experiment(str(Path(__file__).with_name("arithmetic_lora.py")))

CONFIG = dataclasses.replace(
    DEFAULT,
    data=dataclasses.replace(DEFAULT.data, task=dataclasses.replace(DEFAULT.data.task, num_val=8, num_test=100)),
    warm_start=dataclasses.replace(DEFAULT.warm_start, num_demos=48),
    max_steps=30,
    time_budget_s=6.5 * 60,
    export=False,
    out_dir="runs/arithmetic_lora_quick",
)

if __name__ == "__main__":
    from rft_jax.cli.train import cli_with_default  # noqa: PLC0415
    from rft_jax.hugepages import reexec_with_hugepages  # noqa: PLC0415

    reexec_with_hugepages()

    sys.exit(cli_with_default(CONFIG, sys.argv[1:], description=__doc__))
