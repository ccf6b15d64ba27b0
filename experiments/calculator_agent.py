"""A calculator agent: SmolLM2-135M-Instruct + LoRA learns to call a calculator tool for 3-digit x 2-digit products.

Command:   python experiments/calculator_agent.py --docs docs   (about 30 minutes on a 2-core CPU)
Hardware:  2-core CPU, no GPU.
Result:    docs/calculator_agent.md (table, curves and sample episodes this script writes) and the README's
           experiments table.

The model cannot multiply a 3-digit number by a 2-digit one in its head (its
base rate, measured first without tools, is near 0%). Here it may call a
`calculator` tool (rft_jax/environments/calculator.py) for up to `MAX_TURNS`
turns within an episode budget of `EPISODE_TOKENS` tokens; SmolLM2's chat
template knows no tools, so they reach it through the documented fallback
(docs/tools.md): the tool schema in the system turn and calls written as
<tool_call>{...}</tool_call>. The reward reads only the final answer
(`math_answer`, last number); tool results are context without a loss.

Levers, each a constant below:
- a warm start of `WARM_STEPS` SFT steps on `NUM_DEMOS` generated tool-use
  demonstrations (call the tool, read the result, state it), kept short so
  that most of the gain is left to RL;
- GRPO with LoRA, G = 8, on training products that never appear in the
  held-out set;
- a time budget (`--budget-s`, 24 minutes from the run's start, evaluations
  of the base model and the warm start included), then the final held-out
  evaluation.

The target is a held-out gain of at least 40 points over the base rate, at
least half of it from RL (final minus warm start).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from rft_jax.data.example import Example, stable_id
from rft_jax.data.validate import write_jsonl
from rft_jax.environments import EnvironmentConfig
from rft_jax.grpo import OptimizerConfig
from rft_jax.model.lora import LoraConfig
from rft_jax.rewards.spec import RewardSpec
from rft_jax.rollout.agent_config import AgentConfig
from rft_jax.train.config import DataConfig, EvalConfig, SamplingConfig, TrainConfig, WarmStartConfig

MAX_TURNS, EPISODE_TOKENS = 3, 160
NUM_DEMOS, WARM_STEPS = 8, 8
SYSTEM = "You are a helpful assistant. Use the calculator tool for arithmetic, then state the result."
ACCURACY = RewardSpec("math_answer", {"mode": "last_number"})
OUT = Path("runs/calculator_agent")


def product_problem(a: int, b: int, i: int, seed: int) -> Example:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"What is {a} × {b}?"}]
    return Example(id=f"mul-{seed}-{i:05d}-{stable_id(messages, a * b)[3:11]}", messages=messages,
                   reference_answer=a * b, metadata={"data_source": "rft_jax/multiplication", "a": a, "b": b})


def products(n: int, seed: int, exclude: set[tuple[int, int]] = frozenset()) -> list[Example]:
    """`n` distinct 3-digit x 2-digit products, none of them in `exclude`."""
    rng = np.random.default_rng(seed)
    seen, out = set(exclude), []
    while len(out) < n:
        a, b = int(rng.integers(100, 1000)), int(rng.integers(10, 100))
        if (a, b) not in seen:
            seen.add((a, b))
            out.append(product_problem(a, b, len(out), seed))
    return out


def demonstration(ex: Example) -> Example:
    """A tool-use demonstration: the call, the calculator's reply, the stated answer."""
    a, b = ex.metadata["a"], ex.metadata["b"]
    call = {"id": "call_0", "type": "function",
            "function": {"name": "calculator", "arguments": json.dumps({"expression": f"{a} * {b}"})}}
    turns = [{"role": "assistant", "content": None, "tool_calls": [call]},
             {"role": "tool", "tool_call_id": "call_0", "name": "calculator", "content": str(a * b)},
             {"role": "assistant", "content": f"{a} × {b} = {a * b}"}]
    return Example(ex.id + "-demo", ex.messages + turns, ex.reference_answer, metadata=dict(ex.metadata))


def write_data(folder: Path) -> tuple[DataConfig, str]:
    """Test products first, so training and validation never see them; demonstrations from their own products."""
    folder.mkdir(parents=True, exist_ok=True)
    test = products(100, seed=3)
    held = {(e.metadata["a"], e.metadata["b"]) for e in test}
    val = products(16, seed=2, exclude=held)
    held |= {(e.metadata["a"], e.metadata["b"]) for e in val}
    train = products(2000, seed=1, exclude=held)
    demos = [demonstration(e) for e in products(NUM_DEMOS, seed=4, exclude=held)]
    for name, examples in {"train": train, "val": val, "test": test, "demos": demos}.items():
        write_jsonl(str(folder / f"{name}.jsonl"), examples)
    return (DataConfig(train_file=str(folder / "train.jsonl"), val_file=str(folder / "val.jsonl"),
                       test_file=str(folder / "test.jsonl")), str(folder / "demos.jsonl"))


def config(data: DataConfig, demos: str, budget_s: float, out_dir: Path) -> TrainConfig:
    return TrainConfig(
        data=data,
        reward=ACCURACY,
        mode="lora",
        lora=LoraConfig(rank=16, alpha=32.0),
        optimizer=OptimizerConfig(learning_rate=3e-4, warmup_steps=2, weight_decay=0.0),
        sampling=SamplingConfig(samples_per_prompt=8, temperature=0.8),
        agent=AgentConfig(EnvironmentConfig(name="calculator"), max_turns=MAX_TURNS,
                          max_episode_tokens=EPISODE_TOKENS),
        evaluation=EvalConfig(interval=5),
        warm_start=WarmStartConfig(steps=WARM_STEPS, num_demos=NUM_DEMOS, batch_size=8, learning_rate=3e-4,
                                   source="conversations", demos_file=demos),
        batch_size=4,
        max_steps=400,
        time_budget_s=budget_s,
        require_signal=False,
        out_dir=str(out_dir),
    )


def base_rate_without_tools(data: DataConfig) -> dict:
    """The base model alone on the held-out products: one greedy turn, no tools."""
    import jax  # noqa: PLC0415

    from rft_jax.data.validate import load_examples  # noqa: PLC0415
    from rft_jax.evaluation.evaluate import evaluate  # noqa: PLC0415
    from rft_jax.model.registry import DEFAULT_MODEL, load_model  # noqa: PLC0415
    from rft_jax.model.tokenizer import load_tokenizer  # noqa: PLC0415
    from rft_jax.train.setup import build_scorer  # noqa: PLC0415

    cfg, params = load_model(DEFAULT_MODEL)
    tokenizer = load_tokenizer(DEFAULT_MODEL)
    test = load_examples(data.test_file).examples
    result = evaluate(params, cfg, tokenizer, test, {"reward": build_scorer(ACCURACY)}, key=jax.random.key(0),
                      max_new_tokens=48)
    return {"accuracy": result.metrics["reward/mean"], "sample": result.samples[0]}


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def summarize(run: Path, alone: dict, wall_s: float) -> dict:
    results = json.loads((run / "results.json").read_text())
    base, warm, final = results["base"], results.get("warm_start", results["base"]), results["final"]
    return {"alone": alone["accuracy"], "base": base["reward/mean"], "warm": warm["reward/mean"],
            "final": final["reward/mean"], "tool_rate_base": base.get("agent/tool_call_rate", 0.0),
            "tool_rate_warm": warm.get("agent/tool_call_rate", 0.0),
            "tool_rate_final": final.get("agent/tool_call_rate", 0.0),
            "turns_final": final.get("agent/turns/mean"), "errors_final": final.get("agent/tool_errors/mean"),
            "finished_final": final.get("agent/finished_rate"), "steps": results["final_step"],
            "wall_min": wall_s / 60}


def table(s: dict) -> str:
    pct = lambda x: f"{100 * x:.0f}%"  # noqa: E731
    gain, rl = s["final"] - s["alone"], s["final"] - s["warm"]
    return "\n".join([
        "| stage | held-out accuracy (100 products) | tool-call rate |", "|---|---|---|",
        f"| base model alone (no tools, greedy) | {pct(s['alone'])} | – |",
        f"| base model with the calculator | {pct(s['base'])} | {pct(s['tool_rate_base'])} |",
        f"| after the warm start ({WARM_STEPS} SFT steps on {NUM_DEMOS} demonstrations) | {pct(s['warm'])} "
        f"| {pct(s['tool_rate_warm'])} |",
        f"| after RL ({s['steps']} GRPO steps) | **{pct(s['final'])}** | {pct(s['tool_rate_final'])} |",
        "",
        f"Gain over the base rate: {100 * gain:+.0f} points, of which RL {100 * rl:+.0f} points "
        f"(target: at least +40, at least half from RL). Final episodes: {s['turns_final']:.2f} turns, "
        f"{s['errors_final']:.2f} tool errors, {pct(s['finished_final'])} finished with an answer. "
        f"Wall time {s['wall_min']:.1f} min."])


def plot(run: Path, out_png: Path) -> None:
    from matplotlib.figure import Figure  # noqa: PLC0415

    panels = [("val/reward/mean", "validation accuracy (greedy)"), ("critic/rewards/mean", "train reward"),
              ("agent/tool_call_rate", "episodes that call the tool"), ("agent/turns/mean", "turns per episode")]
    rows = _rows(run)
    fig = Figure(figsize=(11, 6.4), dpi=100)
    for ax, (key, title) in zip(fig.subplots(2, 2).ravel(), panels):
        points = [(r["step"], r[key]) for r in rows if key in r]
        if points:
            ax.plot(*zip(*points), marker=".")
        ax.set_title(title)
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png)


def samples(run: Path, n: int = 3) -> str:
    doc = json.loads((run / "eval_final.json").read_text())
    blocks = []
    for s in doc["samples"][:n]:
        blocks.append(f"**{s['id']}** (reward {s['reward']:.0f}, {s.get('turns', 1)} turns):\n\n```text\n"
                      f"{s['prompt']}\n--- episode ---\n{s.get('transcript', s['completion'])}\n```")
    return "\n\n".join(blocks)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-s", type=float, default=24 * 60,
                        help="the run's time budget from its start (base and warm-start evaluations included); "
                             "the final held-out evaluation follows it")
    parser.add_argument("--docs", type=Path, default=None, help="also write the chart, table and samples there")
    args, rest = parser.parse_known_args(argv)
    from rft_jax.cli.train import cli_with_default  # noqa: PLC0415
    from rft_jax.hugepages import reexec_with_hugepages  # noqa: PLC0415

    reexec_with_hugepages()
    data, demos = write_data(OUT / "data")
    run = OUT / "run"
    t0 = time.perf_counter()
    alone = base_rate_without_tools(data)
    print(f"[calculator] base model alone, no tools: {100 * alone['accuracy']:.0f}% held-out", flush=True)
    shutil.rmtree(run, ignore_errors=True)
    code = cli_with_default(config(data, demos, args.budget_s, run), rest, description=__doc__)
    if code:
        return code
    s = summarize(run, alone, time.perf_counter() - t0)
    (OUT / "summary.json").write_text(json.dumps(s, indent=1))
    text = table(s)
    (OUT / "summary.md").write_text(text + "\n\n" + samples(run) + "\n")
    plot(run, OUT / "calculator_agent.png")
    if args.docs:
        shutil.copy(OUT / "calculator_agent.png", args.docs / "calculator_agent.png")
        (args.docs / "calculator_agent_table.md").write_text(text + "\n\n" + samples(run) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
