"""Running a sweep here: one `rft-jax train` process per run, at most K at a time.

Each run writes into SWEEP_DIR/RUN_NAME (its log in log.txt). A run whose directory
already holds results.json is finished and skipped, so running the sweep again
resumes it. SWEEP_DIR/sweep.json lists every run (name, arm, overrides, seed, run
dir, status, command) for `rft-jax compare` and for people, rewritten as runs finish.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from rft_jax.sweep.spec import Run, Sweep
from rft_jax.train.setup import set_aside_previous_run

PROGRAM = "rft-jax"
MANIFEST = "sweep.json"
RESULTS = "results.json"  # written by `rft-jax train` as its last act (rft_jax/train/loop.py `finish`)
LOG = "log.txt"
POLL_S = 0.5


def flag(key: str, value: Any) -> list[str]:
    """One override in `rft-jax train`'s (tyro's) spelling: `--optimizer.learning-rate 0.001`,
    `--no-export` / `--dynamic-sampling.no-enabled` for False, a list as several values, JSON for an object."""
    *groups, leaf = key.replace("_", "-").split(".")
    prefix = "--" + "".join(group + "." for group in groups)
    if isinstance(value, bool):
        return [prefix + (leaf if value else "no-" + leaf)]
    if isinstance(value, list):
        return [prefix + leaf, *map(_text, value)]
    return [prefix + leaf, _text(value)]


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return json.dumps(value)
    return repr(value) if isinstance(value, float) else str(value)


def run_dir(sweep: Sweep, run: Run) -> Path:
    return Path(sweep.out_dir) / run.name


def train_args(sweep: Sweep, run: Run) -> list[str]:
    """The run's flags after `rft-jax train --config FILE`: its directory, its seed, then its overrides."""
    args = ["--out-dir", str(run_dir(sweep, run))]
    if run.seed is not None:
        args += ["--seed", str(run.seed)]
    for key, value in run.overrides.items():
        args += flag(key, value)
    return args


def command(sweep: Sweep, run: Run) -> list[str]:
    """The command that trains `run`, as the dry run prints it and the slurm script runs it."""
    return [PROGRAM, "train", "--config", sweep.config, *train_args(sweep, run)]


def local_argv(cmd: Sequence[str]) -> list[str]:
    """`cmd` with `rft-jax` as this interpreter's `python -m rft_jax.cli`: a local run uses the sweep's own
    environment, whatever is on PATH."""
    return [sys.executable, "-m", "rft_jax.cli", *cmd[1:]] if cmd[0] == PROGRAM else list(cmd)


def is_finished(directory: Path) -> bool:
    return (directory / RESULTS).is_file()


def manifest(sweep: Sweep, sweep_runs: Sequence[Run], experiment: str) -> dict:
    """sweep.json's contents, each run's status read from its directory (done or pending)."""
    entries = []
    for run in sweep_runs:
        directory = run_dir(sweep, run)
        entries.append({"name": run.name, "arm": run.arm, "overrides": run.overrides, "seed": run.seed, "run_dir": str(directory),
                        "status": "done" if is_finished(directory) else "pending", "log": str(directory / LOG),
                        "command": shlex.join(command(sweep, run))})
    return {"experiment": experiment, "config": sweep.config, "sweep_dir": sweep.out_dir,
            "seeds": list(sweep.seeds), "common": dict(sweep.common), "runs": entries}


def write_manifest(sweep: Sweep, doc: dict) -> Path:
    """Writes sweep.json whole (a reader never sees half of it)."""
    path = Path(sweep.out_dir) / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)
    return path


def _start(sweep: Sweep, run: Run) -> tuple[subprocess.Popen, Any, float]:
    """Launches the run with its output in RUN/log.txt; an unfinished earlier attempt is moved aside first
    (as `rft-jax train` would, but before the new log is opened in the folder it would move)."""
    directory = run_dir(sweep, run)
    set_aside_previous_run(directory)
    directory.mkdir(parents=True, exist_ok=True)
    log = (directory / LOG).open("w")
    # A session of its own: Ctrl-C reaches the sweep alone, which passes on one SIGTERM (a second signal would
    # make `rft-jax train` stop at once instead of after its step).
    proc = subprocess.Popen(local_argv(command(sweep, run)), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    return proc, log, time.perf_counter()


def run_sweep(sweep: Sweep, sweep_runs: Sequence[Run], experiment: str, concurrency: int = 1,
              only: Collection[str] | None = None, echo: Callable[[str], None] = print) -> int:
    """Runs the sweep's unfinished runs (those in `only`, when given), `concurrency` at a time; a failed run is
    reported with its log and the others go on. Returns how many failed."""
    doc = manifest(sweep, sweep_runs, experiment)
    entries = {entry["name"]: entry for entry in doc["runs"]}
    chosen = [run for run in sweep_runs if only is None or run.name in only]
    for run in chosen:
        if entries[run.name]["status"] == "done":
            echo(f"[sweep] {run.name}: finished already ({RESULTS}), skipped")
    todo = [run for run in chosen if entries[run.name]["status"] != "done"]
    write_manifest(sweep, doc)
    active: dict[str, tuple[subprocess.Popen, Any, float]] = {}
    finished = failed = 0
    try:
        while todo or active:
            while todo and len(active) < max(1, concurrency):
                run = todo.pop(0)
                active[run.name] = _start(sweep, run)
                entries[run.name]["status"] = "running"
                echo(f"[sweep] {run.name}: started, log in {entries[run.name]['log']}")
                write_manifest(sweep, doc)
            time.sleep(POLL_S)
            for name, (proc, log, t0) in list(active.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del active[name]
                finished += 1
                entry, wall = entries[name], time.perf_counter() - t0
                ok = proc.returncode == 0 and is_finished(Path(entry["run_dir"]))
                entry.update(status="done" if ok else "failed", exit_code=proc.returncode, wall_s=round(wall, 1))
                failed += not ok
                where = f"{finished}/{finished + len(active) + len(todo)}"
                echo(f"[sweep] {where} {name}: done in {wall:.0f} s" if ok else
                     f"[sweep] {where} {name}: FAILED (exit {proc.returncode}) after {wall:.0f} s; see {entry['log']}")
                write_manifest(sweep, doc)
    except KeyboardInterrupt:
        _stop(active, entries)
        write_manifest(sweep, doc)
        raise
    return failed


def _stop(active: dict, entries: dict) -> None:
    """SIGTERM to the runs still going (`rft-jax train` saves a checkpoint after its step and stops), then
    waits for them; a second Ctrl-C passes on a second SIGTERM, which stops them at once."""
    for proc, _, _ in active.values():
        proc.terminate()
    try:
        for proc, _, _ in active.values():
            proc.wait()
    except KeyboardInterrupt:
        for proc, _, _ in active.values():
            proc.terminate()
            proc.wait()
    for name, (proc, log, _) in active.items():
        log.close()
        entries[name].update(status="interrupted", exit_code=proc.returncode)
