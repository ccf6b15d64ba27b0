"""`rft-jax compare RUN... | SWEEP_DIR`: compare runs as arms on one HTML page, with the table as CSV and JSON.

Runs whose config.json differ only in the seed (and out_dir, resume, distributed.*) are one arm. The page overlays the
arms' reward, validation, entropy, length and KL curves, tabulates each final metric as mean ± 95% CI over
seeds, and tests every arm against the baseline on the shared held-out items (paired bootstrap, exact
McNemar). Writes OUT/compare.html, OUT/results.csv and OUT/results.json. See docs/compare.md.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import tyro


@dataclasses.dataclass(frozen=True)
class CompareOptions:
    """Which runs to compare, against which arm, and where the page goes."""

    paths: tyro.conf.Positional[tuple[Path, ...]]
    """Run directories, or a sweep directory (every run folder under it, named by its sweep.json)."""
    out: Path | None = None
    """Output folder (default: SWEEP_DIR/compare for one sweep directory, else ./compare)."""
    baseline: str | None = None
    """The arm the others are tested against (default: the first); any part of its name only it contains."""
    metric: tuple[str, ...] = ()
    """Final metrics for the table, e.g. pass@1 reward/mean (default: every one all runs have)."""
    eval: str = "final"
    """The evaluation compared: results.json[EVAL] and eval_EVAL.json ('final' is the test split, 'val' validation)."""
    resamples: int = 10_000
    """Paired bootstrap resamples."""
    seed: int = 0
    """Seed of the paired bootstrap (the page is reproducible)."""


def default_out(paths: tuple[Path, ...]) -> Path:
    """Beside a sweep's runs for one sweep folder; else in the working directory."""
    from rft_jax.compare.runs import is_run  # noqa: PLC0415

    if len(paths) == 1 and paths[0].is_dir() and not is_run(paths[0]):
        return paths[0] / "compare"
    return Path("compare")


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(CompareOptions, args=argv, prog="rft-jax compare", description=__doc__,
                    config=(tyro.conf.PositionalMetavarFromFieldName,))
    from rft_jax.compare.build import build_comparison  # noqa: PLC0415 (matplotlib: keeps --help fast)
    from rft_jax.compare.runs import CompareError  # noqa: PLC0415

    if not args.paths:
        print("rft-jax compare: pass run directories or a sweep directory", file=sys.stderr)
        return 2
    try:
        written = build_comparison(list(args.paths), args.out or default_out(args.paths), baseline=args.baseline,
                                   metrics=args.metric, eval_name=args.eval, resamples=args.resamples, seed=args.seed)
    except CompareError as err:
        print(f"rft-jax compare: {err}", file=sys.stderr)
        return 2
    for path in written.values():
        print(path)
    return 0
