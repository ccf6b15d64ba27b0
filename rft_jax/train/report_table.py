"""The before/after table printed at the end of a run (and pasted into the README)."""

from __future__ import annotations

ROWS = (("strict/mean", "strict accuracy"), ("loose/mean", "loose accuracy"), ("format/mean", "format compliance"),
        ("reward/mean", "mean reward"), ("response_length/mean", "mean length (tokens)"))


def before_after_markdown(results: dict) -> str:
    names = [n for n in ("base", "warm_start", "final") if n in results]
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key, label in ROWS:
        if all(key in results[n] for n in names):
            pct = not key.startswith("response_length") and key != "reward/mean"
            cells = [f"{100 * results[n][key]:.1f}%" if pct else f"{results[n][key]:.2f}" for n in names]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_before_after(results: dict) -> None:
    if "base" in results and "final" in results:
        print("\nHeld-out test set, greedy decoding:\n" + before_after_markdown(results))
    if "wall_seconds" in results:
        print(f"\nwall time: {results['wall_seconds'] / 60:.1f} min")
