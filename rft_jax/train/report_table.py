"""The before/after table printed at the end of a run (and pasted into the README).

Its rows are the evaluation's scorers: the experiment's views (`evaluation.views`),
then the reward and the response length, then in reasoning mode the think and
answer lengths and the shares of budget hits and well-formed answers, and in
multi-turn runs the turns, tool calls and errors per episode and the shares of
episodes that call a tool and that finish with an answer.
"""

from __future__ import annotations

from rft_jax.monitoring.names import (
    ANSWER_LENGTH_MEAN,
    BUDGET_HIT_RATE,
    REASONING_PREFIX,
    THINK_LENGTH_MEAN,
    WELL_FORMED_RATE,
)

FIXED = ("reward/mean", "response_length/mean")
REASONING = (THINK_LENGTH_MEAN, ANSWER_LENGTH_MEAN, BUDGET_HIT_RATE, WELL_FORMED_RATE)
AGENT = ("agent/turns/mean", "agent/tool_calls/mean", "agent/tool_call_rate", "agent/tool_errors/mean",
         "agent/finished_rate")
SHARES = (BUDGET_HIT_RATE, WELL_FORMED_RATE, "agent/tool_call_rate", "agent/finished_rate")
LABELS = {"reward/mean": "mean reward", "response_length/mean": "mean length (tokens)",
          THINK_LENGTH_MEAN: "think length (tokens)", ANSWER_LENGTH_MEAN: "answer length (tokens)",
          BUDGET_HIT_RATE: "think budget hit", WELL_FORMED_RATE: "well-formed answers",
          "agent/turns/mean": "turns per episode", "agent/tool_calls/mean": "tool calls per episode",
          "agent/tool_call_rate": "episodes calling a tool", "agent/tool_errors/mean": "tool errors per episode",
          "agent/finished_rate": "episodes finished with an answer"}


def table_rows(results: dict, names: list[str]) -> list[str]:
    """The `<view>/mean` metrics every evaluation has, views first in their order, then the fixed rows, then
    the reasoning rows (reasoning mode only)."""
    keys = [k for k in results[names[0]] if k.endswith("/mean") and k not in FIXED
            and not k.startswith((REASONING_PREFIX, "agent/")) and all(k in results[n] for n in names)]
    return keys + [k for k in FIXED + REASONING + AGENT if all(k in results[n] for n in names)]


def before_after_markdown(results: dict) -> str:
    names = [n for n in ("base", "warm_start", "final") if n in results]
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in table_rows(results, names):
        values = [results[n][key] for n in names]
        # a view scored 0..1 is a percentage, as are the reasoning shares
        share = key in SHARES or (key not in FIXED + REASONING + AGENT and all(0.0 <= v <= 1.0 for v in values))
        cells = [f"{100 * v:.1f}%" if share else f"{v:.2f}" for v in values]
        lines.append(f"| {LABELS.get(key, key.removesuffix('/mean'))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_before_after(results: dict) -> None:
    if "base" in results and "final" in results:
        print("\nHeld-out test set, greedy decoding:\n" + before_after_markdown(results))
    if "wall_seconds" in results:
        print(f"\nwall time: {results['wall_seconds'] / 60:.1f} min")
