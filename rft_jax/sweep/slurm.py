"""A sweep as a Slurm job array: the same `rft-jax train` commands, one array task per unfinished run.

SWEEP_DIR/slurm/commands.tsv holds one `RUN_NAME<TAB>COMMAND` line per task; the
sbatch script picks line SLURM_ARRAY_TASK_ID + 1, skips a run that has finished
since (RUN/results.json), moves an unfinished earlier attempt aside, and sends the
run's output to RUN/log.txt as a local sweep does. Slurm's own log of each task
goes to SWEEP_DIR/slurm/JOB_TASK.out.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from rft_jax.sweep.runner import LOG, RESULTS, command, is_finished, run_dir
from rft_jax.sweep.spec import Run, Sweep

COMMANDS_FILE = "slurm/commands.tsv"


def pending(sweep: Sweep, sweep_runs: Sequence[Run]) -> list[Run]:
    """The runs the array still has to do: those without results.json now."""
    return [run for run in sweep_runs if not is_finished(run_dir(sweep, run))]


def commands_tsv(sweep: Sweep, sweep_runs: Sequence[Run]) -> str:
    return "".join(f"{run.name}\t{shlex.join(command(sweep, run))}\n" for run in sweep_runs)


def sbatch_script(sweep: Sweep, tasks: int, workdir: Path, concurrency: int | None = None,
                  options: Sequence[str] = (), name: str = "rft-sweep") -> str:
    """The sbatch script for `tasks` array tasks (at most `concurrency` at once); `options` are extra
    `#SBATCH` lines, e.g. `gres=gpu:1` or `--time=2:00:00` (the dashes are added when missing)."""
    sweep_dir = Path(sweep.out_dir)
    limit = f"%{concurrency}" if concurrency else ""
    lines = ["#!/bin/bash",
             f"# {tasks} runs of the sweep in {sweep_dir}, written by `rft-jax sweep --slurm`. Submit with sbatch;",
             "# finished runs are skipped, so writing the script again and resubmitting resumes the sweep.",
             f"#SBATCH --job-name={name}",
             f"#SBATCH --array=0-{tasks - 1}{limit}",
             f"#SBATCH --chdir={workdir}",
             f"#SBATCH --output={sweep_dir / 'slurm' / '%A_%a.out'}",
             *(f"#SBATCH {option if option.startswith('-') else '--' + option}" for option in options),
             "set -euo pipefail",
             f"cd {shlex.quote(str(workdir))}",
             "# the environment that wrote this script, unless rft-jax is on PATH already",
             f'command -v rft-jax >/dev/null || export PATH={shlex.quote(str(Path(sys.executable).parent))}:"$PATH"',
             f'LINE=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(str(sweep_dir / COMMANDS_FILE))})',
             "NAME=${LINE%%$'\\t'*}",
             "CMD=${LINE#*$'\\t'}",
             f'RUN={shlex.quote(str(sweep_dir))}/"$NAME"',
             f'if [ -f "$RUN/{RESULTS}" ]; then echo "$NAME: finished already"; exit 0; fi',
             'if [ -e "$RUN/metrics.jsonl" ] || [ -e "$RUN/checkpoints" ]; then',
             '  mv "$RUN" "$RUN.previous-$(date +%Y%m%d-%H%M%S)"  # an unfinished attempt, kept',
             "fi",
             'mkdir -p "$RUN"',
             'echo "$NAME: $CMD"',
             f'eval "$CMD" > "$RUN/{LOG}" 2>&1']
    return "\n".join(lines) + "\n"


def write_slurm(sweep: Sweep, sweep_runs: Sequence[Run], script: Path, concurrency: int | None = None,
                options: Sequence[str] = ()) -> int:
    """Writes the commands file and the sbatch script for the unfinished runs; returns how many tasks (0: all
    finished, nothing written)."""
    todo = pending(sweep, sweep_runs)
    if not todo:
        return 0
    commands = Path(sweep.out_dir) / COMMANDS_FILE
    commands.parent.mkdir(parents=True, exist_ok=True)
    commands.write_text(commands_tsv(sweep, todo))
    name = f"sweep-{Path(sweep.out_dir).name}"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(sbatch_script(sweep, len(todo), Path.cwd(), concurrency, options, name))
    return len(todo)
