"""Runs and arms: the run folders a comparison reads, grouped by the experiment they ran.

Two runs are one arm when their config.json files differ only in `ignored` fields: their spread is then
seed noise, which the table's confidence intervals measure. An arm is named by the config fields that
differ between arms, so the page says what was varied rather than which folder a run sat in; a sweep's
own arm names (SWEEP/sweep.json, written by `rft-jax sweep`) win when every run of the arm agrees on one.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rft_jax.monitoring.history import MetricHistory
from rft_jax.monitoring.jsonl import read_jsonl
from rft_jax.monitoring.writer import METRICS_FILE

RESULTS_FILE = "results.json"
CONFIG_FILE = "config.json"
SWEEP_FILE = "sweep.json"
RUN_MARKERS = (RESULTS_FILE, METRICS_FILE)  # what makes a folder a run (as far as a comparison cares)
PAGE_FILE = "compare.html"  # beside a comparison's own results.json, which is no run (SWEEP/compare)
# Fields that do not change the experiment: the seed is what an arm's runs vary; `out_dir`, `resume` and
# `distributed.*` only say where a run wrote, whether it was restarted and how many processes ran it (two
# processes train what one does: tests/test_parallel_train_cli.py).
IGNORED = ("seed", "out_dir", "resume")
IGNORED_PREFIXES = ("distributed.",)


def ignored(key: str) -> bool:
    return key in IGNORED or key.startswith(IGNORED_PREFIXES)
MAX_NAME = 60  # an arm whose differing fields spell a longer name is named by its first run's folder
_SEED_SUFFIX = re.compile(r"[-_.,/ ]*seed[-_=]?\d+$")  # "loss.beta=0.04,seed=1" -> "loss.beta=0.04"


class CompareError(ValueError):
    """A comparison that cannot be made as asked; the message says why and what to pass instead."""


@dataclass(frozen=True)
class Run:
    """One run folder, read once: its flattened config, seed, metric history and results.json."""

    path: Path
    config: dict[str, Any]  # dotted keys ("loss.beta") -> value; {} without config.json
    history: MetricHistory
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def seed(self) -> int | None:
        return self.config.get("seed")


@dataclass(frozen=True)
class Arm:
    """Runs of one experiment that differ only in their seed."""

    name: str
    runs: tuple[Run, ...]
    fields: dict[str, Any]  # the config fields that set this arm apart from the others

    @property
    def seeds(self) -> list[int | None]:
        return [r.seed for r in self.runs]


def is_run(path: Path) -> bool:
    if not path.is_dir() or (path / PAGE_FILE).is_file():
        return False
    return any((path / marker).is_file() for marker in RUN_MARKERS)


def _runs_under(root: Path) -> list[Path]:
    """Run folders below `root`, not descending into a run (its checkpoints are not runs) nor into the
    `<run>.previous-<time>` folders a fresh run sets its predecessor aside as (rft_jax/train/setup.py)."""
    found = []
    for folder, subdirs, _ in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if ".previous-" not in d)
        if is_run(Path(folder)):
            found.append(Path(folder))
            subdirs[:] = []
    return found


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """Each path as a run folder, or the run folders under it (a sweep); in the order given, each once."""
    found: list[Path] = []
    for path in paths:
        if not path.exists():
            raise CompareError(f"{path} does not exist")
        under = [path] if is_run(path) else _runs_under(path) if path.is_dir() else []
        if not under:
            raise CompareError(f"{path} is not a run directory (no {' or '.join(RUN_MARKERS)}) and holds none; "
                               "pass run folders or a sweep folder")
        found += [p for p in sweep_order(path, under) if p.resolve() not in {f.resolve() for f in found}]
    return found


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config dicts as dotted keys, so two configs can be compared field by field."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def read_json(path: Path) -> Any:
    """A file's JSON; a torn file (a run killed mid-write) is a CompareError that names it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CompareError(f"{path} is not valid JSON ({err})") from err


def load_run(path: Path) -> Run:
    config_path, results_path, metrics_path = path / CONFIG_FILE, path / RESULTS_FILE, path / METRICS_FILE
    config = flatten(read_json(config_path)) if config_path.is_file() else {}
    results = read_json(results_path) if results_path.is_file() else {}
    history = MetricHistory.from_records(read_jsonl(metrics_path)) if metrics_path.is_file() else MetricHistory()
    return Run(path, config, history, results if isinstance(results, dict) else {})


def _value_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def experiment_key(run: Run) -> str:
    """What two runs of one arm share: the config without its `ignored` fields. A run without a config is
    an arm of its own, as nothing says what it ran."""
    if not run.config:
        return f"<no config>:{run.path.resolve()}"
    return _value_text({k: v for k, v in run.config.items() if not ignored(k)})


def differing_fields(configs: list[dict[str, Any]]) -> list[str]:
    """The dotted keys whose value is not the same in every config (absent counts as a value)."""
    keys = sorted(k for k in {k for c in configs for k in c} if not ignored(k))
    return [k for k in keys if len({_value_text(c.get(k, "<absent>")) for c in configs}) > 1]


def _short(value: Any) -> str:
    return value if isinstance(value, str) else _value_text(value)


def _sweep_arm_name(entry: dict) -> str | None:
    """An entry's arm: its `arm`, else its overrides spelled as the sweep spells run names (key=value,
    sorted, "base" for none), else its `name` without a trailing seed tag."""
    if entry.get("arm"):
        return str(entry["arm"])
    overrides = entry.get("overrides")
    if isinstance(overrides, dict):
        return ",".join(f"{k}={_short(overrides[k])}" for k in sorted(overrides)) or "base"
    name = str(entry.get("name") or "")
    return _SEED_SUFFIX.sub("", name) or name or None


def _sweep_run_dir(root: Path, folder: str) -> Path:
    """The entry's run folder: as written (absolute, or relative to where the sweep ran), else under `root`
    (a sweep folder that was moved or copied keeps its runs beside sweep.json)."""
    for candidate in (Path(folder), root / folder, root / Path(folder).name):
        if candidate.is_dir():
            return candidate.resolve()
    return (root / Path(folder).name).resolve()


def read_sweep_names(root: Path) -> dict[Path, str]:
    """Resolved run folder -> its arm name, from ROOT/sweep.json (rft_jax/sweep/runner.py `manifest`).

    The file lists `runs`, each with a `run_dir` and its `name`, `overrides` and `seed`; entries it cannot
    read are skipped, so a sweep still being written is no error."""
    path = root / SWEEP_FILE
    if not path.is_file():
        return {}
    doc = read_json(path)
    entries = doc.get("runs", []) if isinstance(doc, dict) else doc
    names = {}
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("run_dir") and (name := _sweep_arm_name(entry)):
            names[_sweep_run_dir(root, str(entry["run_dir"]))] = name
    return names


def sweep_order(root: Path, runs: list[Path]) -> list[Path]:
    """Runs in sweep.json's order when it lists them (then the rest by path), so arms keep the sweep's order."""
    listed = list(read_sweep_names(root)) if root.is_dir() else []
    rank = {p: i for i, p in enumerate(listed)}
    return sorted(runs, key=lambda p: (rank.get(p.resolve(), len(rank)), str(p)))


def group_arms(runs: list[Run], sweep_names: dict[Path, str] | None = None) -> list[Arm]:
    """Runs grouped into arms, in the order each arm's first run came; names from the sweep or the config."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(experiment_key(run), []).append(run)
    configs = [g[0].config for g in groups.values() if g[0].config]
    varied = differing_fields(configs) if len(configs) > 1 else []
    arms, taken = [], set()
    for members in groups.values():
        fields = {k: members[0].config.get(k) for k in varied} if members[0].config else {}
        name = _arm_name(members, fields, sweep_names or {}, single=len(groups) == 1)
        while name in taken:  # folders in different sweeps can share a name
            name += "'"
        taken.add(name)
        arms.append(Arm(name, tuple(members), fields))
    return arms


def _arm_name(members: list[Run], fields: dict[str, Any], sweep_names: dict[Path, str], single: bool) -> str:
    swept = {sweep_names.get(r.path.resolve()) for r in members}
    if len(swept) == 1 and None not in swept:
        return swept.pop()  # type: ignore[return-value]
    if not members[0].config:
        return members[0].name
    named = ", ".join(f"{k}={_short(v)}" for k, v in fields.items())
    if fields and len(named) <= MAX_NAME:
        return named
    if fields or (single and len(members) == 1):  # too many differences to read as a name: the folder's
        return _SEED_SUFFIX.sub("", members[0].name) or members[0].name
    return "all runs"


def load_arms(paths: list[Path]) -> list[Arm]:
    """Read every run under `paths` and group them into arms, with a sweep folder's own arm names."""
    names: dict[Path, str] = {}
    for path in paths:
        if path.is_dir() and not is_run(path):
            names.update(read_sweep_names(path))
    return group_arms([load_run(p) for p in find_run_dirs(paths)], names)


def pick_baseline(arms: list[Arm], wanted: str | None) -> Arm:
    """The named arm (exactly, or by a part of its name only it contains); the first arm by default."""
    if wanted is None:
        return arms[0]
    exact = [a for a in arms if a.name == wanted]
    matches = exact or [a for a in arms if wanted in a.name]
    if len(matches) != 1:
        listed = "; ".join(a.name for a in arms)
        how = "matches no arm" if not matches else "matches several arms"
        raise CompareError(f"--baseline {wanted!r} {how}; the arms are: {listed}")
    return matches[0]
