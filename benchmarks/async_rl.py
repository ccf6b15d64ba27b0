"""Asynchronous against synchronous RL when the reward is slow (a remote endpoint with Lambda-like latency).

Command:  python benchmarks/async_rl.py            (about 50 minutes on 2 CPU cores)
          python benchmarks/async_rl.py --budget-s 120 --seeds 0   (a quick look)

It serves the default experiment's reward with `rft-jax reward serve --added-latency-s 2` (2 s more on
every request batch, standing in for a Lambda), then runs `experiments/arithmetic_lora.py` with that
endpoint as its reward, synchronously and asynchronously (max_staleness 1, truncated IS), each under the
same wall-time budget, for each seed, one run at a time. It prints, and writes to
runs/async_rl/summary.json and docs/async_rl.png, per run:

- steps per hour: GRPO steps between the first and the last one logged, over the wall time between them
  (validation included, as the run pays for it);
- held-out strict accuracy (the 200-problem test split, greedy) at the end of the budget;
- the mean time the trainer waited for rollouts and rewards per step (`timing_s/wait`; sync: generation
  and reward time).

The ratio printed is async steps/hour over sync steps/hour, per seed and in the mean.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.arithmetic_lora import REWARD  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, latency_s: float) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "rft_jax.cli", "reward", "serve", json.dumps(REWARD.to_json()), "--port", str(port),
           "--added-latency-s", str(latency_s)]
    server = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
            return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError("the reward server did not start")


def run_one(mode: str, seed: int, port: int, budget_s: float, out: Path) -> dict:
    remote = {"name": "remote", "url": f"http://127.0.0.1:{port}/score", "batch_size": 64, "timeout_s": 120.0}
    cmd = [sys.executable, "experiments/arithmetic_lora.py", "--reward", json.dumps(remote), "--seed", str(seed),
           "--time-budget-s", str(budget_s), "--out-dir", str(out), "--no-export"]
    if mode == "async":
        cmd += ["--asynchronous.enabled", "--asynchronous.max-staleness", "1", "--loss.off-policy.correction", "tis"]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    return summarize(mode, seed, out, wall)


def summarize(mode: str, seed: int, out: Path, wall_s: float) -> dict:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in records if "actor/pg_loss" in r]  # the GRPO steps (step 0 holds the base's validation)
    first, last = steps[0], steps[-1]
    results = json.loads((out / "results.json").read_text())
    lag = [s.get("async/staleness_mean", 0.0) for s in steps]
    return {"mode": mode, "seed": seed, "steps": last["step"],
            "steps_per_hour": 3600 * (last["step"] - first["step"]) / (last["time"] - first["time"]),
            "strict": results["final"]["strict/mean"], "reward": results["final"]["reward/mean"],
            "wait_s": statistics.mean(s["timing_s/wait"] if "timing_s/wait" in s
                                      else s["timing_s/generate"] + s["timing_s/reward"] for s in steps),
            "update_s": statistics.mean(s["timing_s/update"] for s in steps[1:] or steps),
            "generate_s": statistics.mean(s["timing_s/generate"] for s in steps[1:] or steps),
            "step_s": statistics.mean(s["timing_s/step"] for s in steps[1:] or steps),
            "staleness_mean": statistics.mean(lag), "wall_s": wall_s,
            "times": [s["time"] - first["time"] for s in steps], "step_ids": [s["step"] for s in steps]}


def plot(rows: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(10, 4))
    ax, bx = fig.subplots(1, 2)
    for r in rows:
        ax.plot([t / 60 for t in r["times"]], r["step_ids"], ls="-" if r["mode"] == "async" else "--",
                label=f"{r['mode']} seed {r['seed']}")
    ax.set(xlabel="minutes since the first GRPO step", ylabel="GRPO steps done", title="Steps under one budget")
    ax.legend()
    names = [f"{r['mode']}\nseed {r['seed']}" for r in rows]
    bx.bar(names, [100 * r["strict"] for r in rows], color=["C1" if r["mode"] == "async" else "C0" for r in rows])
    bx.set(ylabel="held-out strict accuracy (%)", title="Accuracy at the end of the budget")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-s", type=float, default=600.0, help="wall-time budget of each run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--latency-s", type=float, default=2.0, help="added latency per reward request batch")
    parser.add_argument("--out", default="runs/async_rl")
    parser.add_argument("--plot", default="docs/async_rl.png")
    args = parser.parse_args()
    port = free_port()
    server = start_server(port, args.latency_s)
    rows = []
    try:
        for seed in args.seeds:
            for mode in ("async", "sync"):
                row = run_one(mode, seed, port, args.budget_s, ROOT / args.out / f"{mode}-seed{seed}")
                rows.append(row)
                print(f"{mode:5s} seed {seed}: {row['steps']} steps, {row['steps_per_hour']:.0f} steps/h, "
                      f"strict {100 * row['strict']:.1f}%, wait {row['wait_s']:.2f} s/step, "
                      f"update {row['update_s']:.2f} s/step", flush=True)
    finally:
        server.terminate()
    by = {(r["mode"], r["seed"]): r for r in rows}
    ratios = [by["async", seed]["steps_per_hour"] / by["sync", seed]["steps_per_hour"] for seed in args.seeds]
    # The ceiling: rewards hidden and sampling wholly overlapped with the update, so a step costs the longer of
    # the two: sync step / max(generate, update), from the synchronous run (steps after the first, which
    # compiles). On a CPU the two share the cores, so the measured ratio stays below it.
    ceilings = [by["sync", seed]["step_s"] / max(by["sync", seed]["generate_s"], by["sync", seed]["update_s"])
                for seed in args.seeds]
    summary = {"budget_s": args.budget_s, "latency_s": args.latency_s, "rows": rows, "ratios": ratios,
               "mean_ratio": statistics.mean(ratios), "ceilings": ceilings}
    (ROOT / args.out).mkdir(parents=True, exist_ok=True)
    (ROOT / args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    plot(rows, ROOT / args.plot)
    print(f"\nasync/sync steps per hour: {', '.join(f'{r:.2f}x' for r in ratios)} (mean {summary['mean_ratio']:.2f}x); "
          f"ceiling with sampling wholly overlapped (sync step / max(generate, update)): "
          f"{', '.join(f'{c:.2f}x' for c in ceilings)}")
    for mode in ("sync", "async"):
        acc = [100 * r["strict"] for r in rows if r["mode"] == mode]
        print(f"{mode:5s} strict accuracy: {', '.join(f'{a:.1f}%' for a in acc)}")


if __name__ == "__main__":
    main()
