"""`rft-jax sweep experiments/NAME.py`: train the experiment once per arm and seed of its SWEEP.

The file defines `SWEEP = Sweep(arms=..., seeds=...)` (or `get_sweep()`) next to its
CONFIG (docs/sweeps.md). Every run is an `rft-jax train --config FILE --out-dir
SWEEP_DIR/RUN --seed S <overrides>` command; runs that finished (RUN/results.json)
are skipped, so the same command resumes a sweep. Before anything starts, each run's
flags are parsed as `rft-jax train` will parse them, so a misspelt field fails here.

    rft-jax sweep experiments/arithmetic_lora.py --dry-run          # print the commands
    rft-jax sweep experiments/arithmetic_lora.py --concurrency 2    # run them here, 2 at a time
    rft-jax sweep experiments/arithmetic_lora.py --slurm sweep.sbatch --sbatch gres=gpu:1  # a job array
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path

import tyro

from rft_jax.cli.train import build_config, load_experiment
from rft_jax.sweep import runner, slurm
from rft_jax.sweep.spec import Run, Sweep, check_fields, load_sweep, runs
from rft_jax.train.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class SweepOptions:
    """Which sweep, where its runs go, and how they run."""

    experiment: tyro.conf.Positional[Path]
    """The experiment file defining SWEEP (and CONFIG, unless Sweep(config=...) names another file)."""
    out: Path | None = None
    """The sweep directory (default: the sweep's out_dir, else runs/sweeps/<file stem>)."""
    concurrency: int | None = None
    """Runs at once: here (default 1), or the array's task limit with --slurm (default: no limit)."""
    dry_run: bool = False
    """Print the commands of the unfinished runs, one a line, and run nothing."""
    slurm: Path | None = None
    """Write an sbatch job-array script here (and SWEEP_DIR/slurm/commands.tsv) instead of running."""
    sbatch: tuple[str, ...] = ()
    """Extra #SBATCH options for --slurm, e.g. --sbatch gres=gpu:1 time=2:00:00."""
    only: tuple[str, ...] = ()
    """Run only these runs (their names, as --dry-run's --out-dir values end)."""


def check_runs(base: TrainConfig, sweep: Sweep, selected: list[Run]) -> str | None:
    """Why a run's flags would be refused by `rft-jax train` (naming the run), or None: every field path is
    checked against the config tree, then every command line parsed as the run will parse it."""
    try:
        check_fields(base, selected)
    except ValueError as err:
        return str(err)
    for run in selected:
        try:
            build_config(base, runner.train_args(sweep, run))
        except SystemExit:  # tyro has printed why
            return f"run {run.name!r}: `rft-jax train` refuses its flags {runner.train_args(sweep, run)}"
        except (ValueError, TypeError) as err:
            return f"run {run.name!r}: {err}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(SweepOptions, args=argv, prog="rft-jax sweep", description=__doc__,
                    config=(tyro.conf.PositionalMetavarFromFieldName,))
    try:
        sweep = load_sweep(args.experiment)
        if args.out:
            sweep = dataclasses.replace(sweep, out_dir=str(args.out))
        sweep_runs = runs(sweep)
        base = load_experiment(sweep.config)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"rft-jax sweep: {err}", file=sys.stderr)
        return 2
    names = {run.name for run in sweep_runs}
    if unknown := [name for name in args.only if name not in names]:
        print(f"rft-jax sweep: --only {unknown}: no such run; the runs are {sorted(names)}", file=sys.stderr)
        return 2
    selected = [run for run in sweep_runs if not args.only or run.name in args.only]
    if problem := check_runs(base, sweep, selected):
        print(f"rft-jax sweep: {problem}", file=sys.stderr)
        return 2
    if args.dry_run:
        return _print_commands(sweep, selected)
    if args.slurm:
        return _write_slurm(sweep, sweep_runs, selected, args)
    try:
        failed = runner.run_sweep(sweep, sweep_runs, str(args.experiment), args.concurrency or 1,
                                  only={run.name for run in selected})
    except KeyboardInterrupt:
        print(f"rft-jax sweep: interrupted; run the same command again to resume ({sweep.out_dir})",
              file=sys.stderr)
        return 130
    manifest = Path(sweep.out_dir) / runner.MANIFEST
    print(f"[sweep] {len(selected) - failed} of {len(selected)} runs finished, {failed} failed; {manifest}")
    return 1 if failed else 0


def _print_commands(sweep: Sweep, selected: list[Run]) -> int:
    """The unfinished runs' commands on stdout (a shell can run them as they are); the finished ones on stderr."""
    for run in selected:
        if runner.is_finished(runner.run_dir(sweep, run)):
            print(f"# {run.name}: finished already, skipped", file=sys.stderr)
        else:
            print(shlex.join(runner.command(sweep, run)))
    return 0


def _write_slurm(sweep: Sweep, sweep_runs: list[Run], selected: list[Run], args: SweepOptions) -> int:
    tasks = slurm.write_slurm(sweep, selected, args.slurm, args.concurrency, args.sbatch)
    if not tasks:
        print(f"[sweep] every run has finished already; nothing to submit ({sweep.out_dir})")
        return 0
    runner.write_manifest(sweep, runner.manifest(sweep, sweep_runs, str(args.experiment)))
    print(f"[sweep] {tasks} array tasks in {args.slurm} (commands: {Path(sweep.out_dir) / slurm.COMMANDS_FILE}); "
          f"submit with: sbatch {args.slurm}")
    return 0
