"""Ablation: the grpo, dapo, dr_grpo and gspo presets from one warm-started policy on the default task.

Command:   python experiments/ablation_presets.py            (about 45 minutes on a 2-core CPU)
Hardware:  2-core CPU, no GPU.
Result:    docs/ablation_presets.md (the table and the curves this script writes, with what each preset does).

The default experiment (experiments/arithmetic_lora.py) is run once, for one RL
step, only to produce its warm-started policy (RUN/start/warm_start/model). Each
arm then starts from that same policy, with the same seed, data, batch and
sampling, for the same number of RL steps, through `rft-jax train --preset` in a
process of its own (so no arm inherits another's compiled code). An arm changes
only what its preset sets: the advantage estimator, the loss and whether groups
without reward variance are replaced (dynamic sampling).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ARMS = ("grpo", "dapo", "dr_grpo", "gspo")
EXPERIMENT = Path(__file__).with_name("arithmetic_lora.py")
# Every arm and the start: the default experiment on a 100-problem test split, without an export.
COMMON = ["--data.task.num-test", "100", "--no-export"]


def _train(argv: list[str], log: Path) -> float:
    """Runs the default experiment's CLI with `argv`; returns its wall seconds (its output goes to `log`)."""
    t0 = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run([sys.executable, str(EXPERIMENT), *COMMON, *argv], stdout=out, stderr=subprocess.STDOUT,
                              check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(argv)} failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - t0


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _mean(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if key in r]
    return float(np.mean(values)) if values else float("nan")


def summarize(run: Path, wall_s: float) -> dict:
    """The figures the ablation reports for one arm, from its results.json and metrics.jsonl."""
    results = json.loads((run / "results.json").read_text())
    steps = [r for r in _rows(run) if "actor/entropy" in r]
    return {
        "start_strict": results["base"]["strict/mean"],
        "final_strict": results["final"]["strict/mean"],
        "final_format": results["final"]["format/mean"],
        "final_length": results["final"]["response_length/mean"],
        "train_length": _mean(steps, "response_length/mean"),
        "entropy": _mean(steps, "actor/entropy"),
        "entropy_last": steps[-1]["actor/entropy"],
        "zero_std_frac": _mean(steps, "batch/zero_std_frac"),
        "zero_std_first": _mean(steps, "dynamic/zero_std_frac_first"),
        "extra_prompts": float(sum(r.get("dynamic/extra_prompts", 0.0) for r in steps)),
        "mismatch_max": max(r.get("mismatch/max_abs_logp_diff", 0.0) for r in steps),
        "mismatch_kl": _mean(steps, "mismatch/kl"),
        "steps": results["final_step"],
        "wall_min": wall_s / 60,
    }


def table(summaries: dict[str, dict]) -> str:
    head = ("| preset | held-out strict (start → final) | format | mean length (test / train) | entropy (mean / last) "
            "| zero-variance share | extra prompts | steps | wall |")
    lines = [head, "|" + "---|" * 9]
    for name, s in summaries.items():
        zero = f"{s['zero_std_frac']:.2f}"
        if not np.isnan(s["zero_std_first"]):  # dynamic sampling: before the refill → in the trained batch
            zero = f"{s['zero_std_first']:.2f} → {s['zero_std_frac']:.2f}"
        lines.append(
            f"| `{name}` | {100 * s['start_strict']:.0f}% → **{100 * s['final_strict']:.0f}%** "
            f"| {100 * s['final_format']:.0f}% | {s['final_length']:.1f} / {s['train_length']:.1f} "
            f"| {s['entropy']:.3f} / {s['entropy_last']:.3f} | {zero} | {s['extra_prompts']:.0f} | {s['steps']} "
            f"| {s['wall_min']:.1f} min |")
    return "\n".join(lines)


def plot(runs: dict[str, Path], out_png: Path) -> None:
    from matplotlib.figure import Figure  # noqa: PLC0415

    panels = [("rewards/strict/mean", "train strict reward"), ("response_length/mean", "mean length (tokens)"),
              ("actor/entropy", "entropy (nats/token)"), ("batch/zero_std_frac", "zero-variance share")]
    fig = Figure(figsize=(11, 6.4), dpi=100)
    axes = fig.subplots(2, 2).ravel()
    for ax, (key, title) in zip(axes, panels):
        for name, run in runs.items():
            rows = [r for r in _rows(run) if key in r]
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], marker=".", label=name)
        ax.set_title(title)
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out_png)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/ablation_presets"))
    parser.add_argument("--steps", type=int, default=12, help="RL steps per arm")
    parser.add_argument("--arm-budget-s", type=float, default=9 * 60,
                        help="each arm's time budget (a cap; the arms are meant to reach --steps)")
    parser.add_argument("--arms", nargs="+", default=list(ARMS))
    parser.add_argument("--docs", type=Path, default=None, help="also copy the chart here (docs/ in the repository)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    start = args.out / "start"
    warm = start / "warm_start" / "model"
    if not warm.exists():
        print(f"[ablation] the shared start: warm start of the default experiment -> {warm}", flush=True)
        _train(["--max-steps", "1", "--out-dir", str(start)], args.out / "start.log")

    summaries, runs = {}, {}
    for name in args.arms:
        run = args.out / name
        shutil.rmtree(run, ignore_errors=True)
        print(f"[ablation] {name}: {args.steps} steps from {warm}", flush=True)
        wall = _train(["--preset", name, "--model.name", str(warm), "--warm-start.steps", "0",
                       "--max-steps", str(args.steps), "--time-budget-s", str(args.arm_budget_s),
                       "--out-dir", str(run)], args.out / f"{name}.log")
        runs[name], summaries[name] = run, summarize(run, wall)
        print(f"[ablation] {name}: {json.dumps(summaries[name])}", flush=True)

    (args.out / "summary.json").write_text(json.dumps(summaries, indent=1))
    text = table(summaries)
    (args.out / "summary.md").write_text(text + "\n")
    plot(runs, args.out / "ablation.png")
    if args.docs:
        shutil.copy(args.out / "ablation.png", args.docs / "ablation_presets.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
