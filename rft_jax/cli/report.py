"""`rft-jax report RUN_DIR`: write an HTML report of a training run (RUN_DIR/report/report.html by default).

It reads only files in the run directory (metrics.jsonl, alarms.jsonl, eval_*.json;
formats in docs/monitoring.md), so it works on a finished run, a crashed one, or one
still training.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import tyro


@dataclasses.dataclass(frozen=True)
class ReportOptions:
    """Which run to report on, and where the page goes."""

    run_dir: tyro.conf.Positional[Path]
    """The run directory (metrics.jsonl, alarms.jsonl, eval_*.json)."""
    out: Path | None = None
    """Output folder (default: RUN_DIR/report)."""
    examples: int = 4
    """Side-by-side example prompts to show."""


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(ReportOptions, args=argv, prog="rft-jax report", description=__doc__,
                    config=(tyro.conf.PositionalMetavarFromFieldName,))
    from rft_jax.evaluation.report import build_report  # noqa: PLC0415 (matplotlib: keeps --help fast)
    from rft_jax.monitoring.writer import METRICS_FILE  # noqa: PLC0415

    if not args.run_dir.is_dir():
        print(f"rft-jax report: {args.run_dir} is not a directory", file=sys.stderr)
        return 2
    if not (args.run_dir / METRICS_FILE).exists() and not any(args.run_dir.glob("eval_*.json")):
        print(f"rft-jax report: {args.run_dir} has neither {METRICS_FILE} nor eval_*.json files", file=sys.stderr)
        return 2
    print(build_report(args.run_dir, args.out, examples=args.examples))
    return 0
