"""Reasoning on vs off: SmolLM2-135M-Instruct + LoRA on two-step word problems, with equal wall time.

Command:   python experiments/arithmetic_reasoning.py --docs docs   (about 30 minutes on a 2-core CPU)
Hardware:  2-core CPU, no GPU.
Result:    docs/arithmetic_reasoning.md (table and curves this script writes) and the README's experiments table.

The two arms run at the same time, each in its own process pinned to its own
core (`taskset`), so they share the machine's conditions and get the same wall
time: `--arm-budget-s` (25 minutes) from the start of each run, which covers
the base model's measurement, the warm start and RL, then the final test
evaluation (about 4 minutes). They differ only in
the reasoning config:
- off: the model answers within `ANSWER_BUDGET` tokens;
- on: it first thinks for up to `THINK_BUDGET` tokens inside <think>…</think>
  (budget forcing writes the closing tag and the `ANSWER:` cue at the budget),
  then answers within the same answer budget; the reward reads only the answer.

Everything else is shared: the data (training on one- and two-step problems,
validation and test on two-step problems only), the reward (the default
experiment's loose + format + strict mix), LoRA, the optimizer, G, the batch,
and a warm start of 3 SFT steps on the model's own greedy answers with the
`ANSWER:` line appended (its own thinking, closed, in the reasoning arm).

One arm alone: `python experiments/arithmetic_reasoning.py --arm on` (any
`rft-jax train` flag may follow, e.g. `--max-steps 5`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from rft_jax.data.reasoning import ReasoningConfig
from rft_jax.data.tasks.arithmetic import generate_arithmetic
from rft_jax.data.tasks.prompt import PromptStyle
from rft_jax.data.validate import write_jsonl
from rft_jax.grpo import OptimizerConfig
from rft_jax.model.lora import LoraConfig
from rft_jax.rewards.spec import RewardSpec
from rft_jax.train.config import DataConfig, EvalConfig, SamplingConfig, TrainConfig, WarmStartConfig

THINK_BUDGET, ANSWER_BUDGET = 64, 32
STYLE = PromptStyle(system="You are a careful math assistant. Answer briefly.")
# The instruction format's system instruction (SmolLM2 has no native thinking switch), with one worked example
# of the step-per-line thinking that a two-step problem needs.
THINK_INSTRUCTION = ("Think inside <think> and </think> before you answer: write one equation per step, for example\n"
                     "<think>\n4 × 6 = 24\n24 - 9 = 15\n</think>\nANSWER: 15")

STRICT = RewardSpec("math_answer", {"mode": "strict_line"})
LOOSE = RewardSpec("math_answer", {"mode": "last_number"})
FORMAT = RewardSpec("answer_format")
REWARD = RewardSpec.aggregate(loose=dataclasses.replace(LOOSE, weight=0.5),
                              format=dataclasses.replace(FORMAT, weight=0.25), strict=STRICT)
DATA_DIR = Path("runs/arithmetic_reasoning/data")

REASONING = {
    "off": ReasoningConfig(mode="off"),
    "on": ReasoningConfig(mode="on", think_budget=THINK_BUDGET, answer_budget=ANSWER_BUDGET, answer_cue="\nANSWER:",
                          instruction=THINK_INSTRUCTION),
}


def write_data(folder: Path) -> DataConfig:
    """Training on one- and two-step problems (the one-step ones give the base model a signal to start from);
    validation and test on two-step problems only, with seeds training never sees."""
    folder.mkdir(parents=True, exist_ok=True)
    splits = {"train": generate_arithmetic(2000, seed=1, levels=("one_step", "two_step"), prompt=STYLE),
              "val": generate_arithmetic(16, seed=2, levels=("two_step",), prompt=STYLE),
              "test": generate_arithmetic(100, seed=3, levels=("two_step",), prompt=STYLE)}
    for name, examples in splits.items():
        write_jsonl(str(folder / f"{name}.jsonl"), examples)
    return DataConfig(train_file=str(folder / "train.jsonl"), val_file=str(folder / "val.jsonl"),
                      test_file=str(folder / "test.jsonl"))


def config(arm: str, data: DataConfig, budget_s: float) -> TrainConfig:
    reasoning = REASONING[arm]
    return TrainConfig(
        data=data,
        reward=REWARD,
        mode="lora",
        lora=LoraConfig(rank=16, alpha=32.0),
        optimizer=OptimizerConfig(learning_rate=3.5e-4, warmup_steps=2, weight_decay=0.0),
        sampling=SamplingConfig(samples_per_prompt=8, temperature=0.8,
                                max_new_tokens=reasoning.completion_budget if reasoning.enabled else ANSWER_BUDGET),
        reasoning=reasoning,
        evaluation=EvalConfig(interval=5, views=(("strict", STRICT), ("loose", LOOSE), ("format", FORMAT))),
        warm_start=WarmStartConfig(steps=3, num_demos=64, batch_size=16, learning_rate=1.7e-4),
        batch_size=4,
        max_steps=400,
        time_budget_s=budget_s,
        require_signal=False,  # two-step validation can start at 0: the one-step training problems carry the signal
        out_dir=f"runs/arithmetic_reasoning/{arm}",
    )


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def summarize(run: Path, wall_s: float) -> dict:
    results = json.loads((run / "results.json").read_text())
    steps = [r for r in _rows(run) if "actor/entropy" in r]
    base, final = results["base"], results["final"]
    return {"start_strict": base["strict/mean"], "final_strict": final["strict/mean"],
            "start_loose": base["loose/mean"], "final_loose": final["loose/mean"],
            "final_format": final["format/mean"], "final_length": final["response_length/mean"],
            "think_start": base.get("reasoning/think_length/mean"), "think_final": final.get("reasoning/think_length/mean"),
            "well_formed_final": final.get("reasoning/well_formed_rate"),
            "budget_hit_final": final.get("reasoning/budget_hit_rate"),
            "steps": results["final_step"], "train_steps_logged": len(steps), "wall_min": wall_s / 60}


def table(summaries: dict[str, dict]) -> str:
    lines = ["| reasoning | held-out strict, two-step (start → final) | loose | format | think tokens (start → final) "
             "| well-formed | budget hit | RL steps | wall |", "|" + "---|" * 9]
    pct = lambda x: "–" if x is None else f"{100 * x:.0f}%"  # noqa: E731
    for arm, s in summaries.items():
        think = "–" if s["think_final"] is None else f"{s['think_start']:.0f} → {s['think_final']:.0f}"
        lines.append(f"| {arm} | {pct(s['start_strict'])} → **{pct(s['final_strict'])}** "
                     f"| {pct(s['start_loose'])} → {pct(s['final_loose'])} | {pct(s['final_format'])} | {think} "
                     f"| {pct(s['well_formed_final'])} | {pct(s['budget_hit_final'])} | {s['steps']} "
                     f"| {s['wall_min']:.1f} min |")
    return "\n".join(lines)


def plot(runs: dict[str, Path], out_png: Path) -> None:
    from matplotlib.figure import Figure  # noqa: PLC0415

    panels = [("val/reward/mean", "validation reward (two-step, greedy)"), ("rewards/strict/mean", "train strict"),
              ("response_length/mean", "policy tokens per completion"),
              ("reasoning/think_length/mean", "think tokens (reasoning on)")]
    fig = Figure(figsize=(11, 6.4), dpi=100)
    axes = fig.subplots(2, 2).ravel()
    for ax, (key, title) in zip(axes, panels):
        for color, (name, run) in enumerate(runs.items()):
            rows = _rows(run)
            minutes = dict(zip([r["step"] for r in rows if "timing_s/step" in r],
                               np.cumsum([r["timing_s/step"] for r in rows if "timing_s/step" in r]) / 60))
            rows = [r for r in rows if key in r and r["step"] in minutes]
            if rows:
                ax.plot([minutes[r["step"]] for r in rows], [r[key] for r in rows], marker=".", label=name,
                        color=f"C{color}")
        ax.set_title(title)
        ax.set_xlabel("RL wall minutes (step time, evaluations excluded)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out_png)


def run_arm(arm: str, argv: list[str]) -> int:
    from rft_jax.cli.train import cli_with_default  # noqa: PLC0415
    from rft_jax.hugepages import reexec_with_hugepages  # noqa: PLC0415

    reexec_with_hugepages()
    budget = float(os.environ.get("RFT_ARM_BUDGET_S", 25 * 60))
    return cli_with_default(config(arm, write_data(DATA_DIR), budget), argv, description=__doc__)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arm", choices=sorted(REASONING), default=None, help="run one arm here (rft-jax train "
                        "flags may follow)")
    parser.add_argument("--arm-budget-s", type=float, default=25 * 60,
                        help="each run's time budget, from its start (evaluation of the base model and warm start "
                             "included); the final test evaluation follows it")
    parser.add_argument("--docs", type=Path, default=None, help="also write the chart and table there")
    args, rest = parser.parse_known_args(argv)
    if args.arm:
        return run_arm(args.arm, rest)
    out = Path("runs/arithmetic_reasoning")
    out.mkdir(parents=True, exist_ok=True)
    write_data(DATA_DIR)
    cores = sorted(os.sched_getaffinity(0))
    procs, started = {}, {}
    for i, arm in enumerate(("off", "on")):
        shutil.rmtree(out / arm, ignore_errors=True)
        pin = ["taskset", "-c", str(cores[i % len(cores)])] if len(cores) > 1 and shutil.which("taskset") else []
        env = {**os.environ, "RFT_ARM_BUDGET_S": str(args.arm_budget_s)}
        log = (out / f"{arm}.log").open("w")
        started[arm] = time.perf_counter()
        procs[arm] = subprocess.Popen([*pin, sys.executable, __file__, "--arm", arm, *rest], stdout=log,
                                      stderr=subprocess.STDOUT, env=env)
        print(f"[reasoning] arm {arm}: pid {procs[arm].pid}, log {out / f'{arm}.log'}", flush=True)
    walls = {}
    for arm, proc in procs.items():
        if proc.wait():
            raise SystemExit(f"arm {arm} failed (exit {proc.returncode}); see {out / f'{arm}.log'}")
        walls[arm] = time.perf_counter() - started[arm]
    runs = {arm: out / arm for arm in procs}
    summaries = {arm: summarize(runs[arm], walls[arm]) for arm in procs}
    (out / "summary.json").write_text(json.dumps(summaries, indent=1))
    text = table(summaries)
    (out / "summary.md").write_text(text + "\n")
    plot(runs, out / "reasoning.png")
    if args.docs:
        shutil.copy(out / "reasoning.png", args.docs / "arithmetic_reasoning.png")
        (args.docs / "arithmetic_reasoning_table.md").write_text(text + "\n")
    gap = 100 * (summaries["on"]["final_strict"] - summaries["off"]["final_strict"])
    print(text)
    print(f"[reasoning] on - off, held-out strict on two-step problems: {gap:+.0f} points "
          f"(target: at least +15); mean of {np.mean([s['steps'] for s in summaries.values()]):.0f} RL steps")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
