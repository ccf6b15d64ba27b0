"""`build_comparison`: read runs, group them into arms, compute the table and tests, write the three files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from rft_jax.compare.page import curve_charts, render_page
from rft_jax.compare.runs import PAGE_FILE, load_arms, pick_baseline
from rft_jax.compare.table import compare, csv_rows
from rft_jax.monitoring.jsonl import to_jsonable

CSV_FILE = "results.csv"
JSON_FILE = "results.json"


def write_csv(rows: list[dict], path: Path) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))  # every arm's columns, first-seen order
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)


def build_comparison(paths: list[Path], out_dir: Path, *, baseline: str | None = None, metrics: tuple[str, ...] = (),
                     eval_name: str = "final", resamples: int = 10_000, seed: int = 0) -> dict[str, Path]:
    """Write compare.html, results.csv and results.json into `out_dir`; returns their paths by file name.

    Raises `CompareError` (with what to pass instead) for a path that is no run, an unknown baseline, or a
    requested metric some runs lack. Missing curves and runs without shared held-out items are notes on
    the page, not errors: a half-finished sweep can still be compared.
    """
    arms = load_arms(paths)
    doc = compare(arms, pick_baseline(arms, baseline), eval_name=eval_name, metrics=metrics,
                  resamples=resamples, seed=seed)
    charts, curve_notes = curve_charts(arms)
    doc["notes"] += curve_notes
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {name: out_dir / name for name in (PAGE_FILE, CSV_FILE, JSON_FILE)}
    written[JSON_FILE].write_text(json.dumps(to_jsonable(doc), indent=1), encoding="utf-8")
    write_csv(csv_rows(doc), written[CSV_FILE])
    written[PAGE_FILE].write_text(render_page(doc, charts, doc["notes"]), encoding="utf-8")
    return written
