"""The before/after table printed at the end of a run (and pasted into the README).

Its rows are the evaluation's scorers: the experiment's views (`evaluation.views`),
then the reward and the response length.
"""

from __future__ import annotations

FIXED = ("reward/mean", "response_length/mean")
LABELS = {"reward/mean": "mean reward", "response_length/mean": "mean length (tokens)"}


def table_rows(results: dict, names: list[str]) -> list[str]:
    """The `<view>/mean` metrics every evaluation has, views first in their order, then the fixed rows."""
    keys = [k for k in results[names[0]] if k.endswith("/mean") and k not in FIXED
            and all(k in results[n] for n in names)]
    return keys + [k for k in FIXED if all(k in results[n] for n in names)]


def before_after_markdown(results: dict) -> str:
    names = [n for n in ("base", "warm_start", "final") if n in results]
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in table_rows(results, names):
        values = [results[n][key] for n in names]
        share = key not in FIXED and all(0.0 <= v <= 1.0 for v in values)  # a view scored 0..1: a percentage
        cells = [f"{100 * v:.1f}%" if share else f"{v:.2f}" for v in values]
        lines.append(f"| {LABELS.get(key, key.removesuffix('/mean'))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_before_after(results: dict) -> None:
    if "base" in results and "final" in results:
        print("\nHeld-out test set, greedy decoding:\n" + before_after_markdown(results))
    if "wall_seconds" in results:
        print(f"\nwall time: {results['wall_seconds'] / 60:.1f} min")
