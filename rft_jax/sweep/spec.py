"""A sweep as data: a base experiment, a list of arms (override dicts) and seeds.

An experiment file defines, next to its `CONFIG`:

    SWEEP = Sweep(arms=grid({"optimizer.learning_rate": [1e-4, 3e-4]}), seeds=(0, 1))

and `rft-jax sweep experiments/NAME.py` runs one `rft-jax train` per arm and seed
(rft_jax/sweep/runner.py). The arms are plain dicts from dotted TrainConfig paths to
values, built with `axis`, `grid`, `product` and `zipped` (the idea of big_vision's
`get_hyper` sweeps), so the list can be printed, stored in sweep.json and grouped.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib.util
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Overrides = Mapping[str, Any]

# `rft-jax train` flags that are not config fields but may vary between arms.
TRAIN_FLAGS = ("preset",)
# Set by the sweep for every run: an arm that sets them would clash with it.
OWNED = {"seed": "list the seeds in Sweep(seeds=...)", "out_dir": "the sweep gives each run SWEEP_DIR/RUN_NAME",
         "config": "Sweep(config=...) names the base experiment"}
MAX_NAME = 100  # longer run names are cut and end in a hash of the overrides


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A base experiment run once per arm and seed, each run in its own directory under the sweep's."""

    arms: Sequence[Overrides] = ({},)
    """One dict per arm: dotted config paths (`optimizer.learning_rate`, `lora.rank`, or `preset`) -> values."""
    seeds: Sequence[int] = ()
    """Every arm runs once per seed (`--seed`); empty: once, with the base config's seed."""
    common: Overrides = dataclasses.field(default_factory=dict)
    """Overrides every run gets, left out of the run names (e.g. a smaller test split for all arms)."""
    config: str = ""
    """The experiment file whose CONFIG is the base, relative to the file that defines the sweep; empty: that file."""
    out_dir: str = ""
    """The sweep directory (SWEEP_DIR/RUN_NAME per run, SWEEP_DIR/sweep.json); empty: runs/sweeps/<file stem>."""


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of a sweep: the overrides it gets (common + its arm's) and its seed."""

    name: str
    """Its directory under the sweep's: the arm's name and the seed."""
    arm: str
    """Its arm's name (the runs of an arm differ only in their seed)."""
    overrides: dict
    seed: int | None


def axis(key: str, values: Sequence) -> list[dict]:
    """One arm per value of one field: axis("lora.rank", [8, 16]) -> [{"lora.rank": 8}, {"lora.rank": 16}]."""
    return [{key: value} for value in values]


def product(*arm_lists: Sequence[Overrides]) -> list[dict]:
    """Every combination of one arm from each list, merged (later lists win on a shared key)."""
    return [_merge(combo) for combo in itertools.product(*arm_lists)]


def zipped(*arm_lists: Sequence[Overrides]) -> list[dict]:
    """The i-th arms of the lists merged, for fields that vary together (e.g. a learning rate per rank)."""
    lengths = {len(arms) for arms in arm_lists}
    if len(lengths) > 1:
        raise ValueError(f"zipped needs lists of one length, got lengths {sorted(lengths)}")
    return [_merge(combo) for combo in zip(*arm_lists)]


def grid(axes: Mapping[str, Sequence] | None = None, /, **more: Sequence) -> list[dict]:
    """The full grid over the axes: grid({"optimizer.learning_rate": [1e-4, 3e-4]}, batch_size=[4, 8])."""
    axes = {**(axes or {}), **more}
    return product(*(axis(key, values) for key, values in axes.items()))


def _merge(arms: Sequence[Overrides]) -> dict:
    merged: dict = {}
    for arm in arms:
        merged.update(arm)
    return merged


def canonical(overrides: Overrides) -> dict:
    """Keys in the config's own spelling (`optimizer.learning_rate`) and values as JSON data (tuples as lists,
    a RewardSpec as its JSON spec), so a run's overrides print, store and compare the same everywhere."""
    out = {}
    for key, value in overrides.items():
        out[key.lstrip("-").replace("-", "_")] = _plain(value, key)
    return out


def _plain(value: Any, key: str) -> Any:
    if hasattr(value, "to_json"):  # a RewardSpec: the JSON the command line takes back
        value = value.to_json()
    if isinstance(value, (tuple, list)):
        return [_plain(v, key) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, key) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"override {key!r} = {value!r}: values are numbers, strings, booleans, None, lists or "
                    "JSON objects (what `rft-jax train` takes on its command line)")


def _slug(value: Any) -> str:
    """A value as a piece of a directory name."""
    if isinstance(value, dict):  # a JSON spec: too long to spell out
        return hashlib.sha1(json.dumps(value, sort_keys=True).encode()).hexdigest()[:8]
    if isinstance(value, list):
        return "+".join(_slug(v) for v in value) or "empty"
    text = str(value).lower() if isinstance(value, bool) or value is None else str(value)
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text) or "empty"


def run_name(arm: Overrides, seed: int | None) -> str:
    """The run's directory name: its arm's overrides and its seed, sorted by key, so it does not change when
    arms are added or reordered (the sweep resumes by name). E.g. `optimizer.learning_rate=0.0003,seed=1`."""
    arm = canonical(arm)
    parts = [f"{key}={_slug(arm[key])}" for key in sorted(arm)] or ["base"]
    if seed is not None:
        parts.append(f"seed={seed}")
    name = ",".join(parts)
    if len(name) > MAX_NAME:
        digest = hashlib.sha1(json.dumps([arm, seed], sort_keys=True).encode()).hexdigest()[:8]
        name = f"{name[:MAX_NAME - 9]}-{digest}"
    return name


def runs(sweep: Sweep) -> list[Run]:
    """The sweep's runs, arm by arm and seed by seed; refuses a key the sweep sets itself and two runs that
    would share a directory."""
    common = canonical(sweep.common)
    _refuse_owned("Sweep.common", common)
    out, seen = [], {}
    for index, arm in enumerate(sweep.arms):
        arm = canonical(arm)
        _refuse_owned(f"arm {index} {arm}", arm)
        for seed in sweep.seeds or [None]:
            run = Run(run_name(arm, seed), run_name(arm, None), {**common, **arm}, seed)
            if run.name in seen:
                raise ValueError(f"arms {seen[run.name]} and {index} both name their run {run.name!r}: make their "
                                 "overrides differ (or drop the duplicate)")
            seen[run.name] = index
            out.append(run)
    return out


def _refuse_owned(where: str, overrides: dict) -> None:
    if owned := sorted(overrides.keys() & OWNED.keys()):
        raise ValueError(f"{where} sets {owned[0]!r}: {OWNED[owned[0]]}")


def check_fields(config: Any, sweep_runs: Sequence[Run]) -> None:
    """Refuses an override that names no field of the config tree, naming the run and the field, before
    anything is launched (a typo would otherwise fail every run after its model has loaded)."""
    for run in sweep_runs:
        for key in run.overrides:
            if key not in TRAIN_FLAGS:
                problem = _missing_field(config, key)
                if problem:
                    raise ValueError(f"run {run.name!r}: override {key!r} is not a config field: {problem}; "
                                     "`rft-jax train --help` lists them")


def _missing_field(config: Any, key: str) -> str | None:
    """Why `key` (dotted) is not a field path of `config`, or None when it is."""
    node, path = config, []
    for part in key.split("."):
        if not dataclasses.is_dataclass(node):
            return f"{'.'.join(path)} has no fields below it"
        names = [f.name for f in dataclasses.fields(node)]
        if part not in names:
            where = ".".join(path) or type(config).__name__
            close = difflib.get_close_matches(part, names, n=1)
            return f"{where} has no field {part!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
        node, path = getattr(node, part), [*path, part]
    return None


def load_sweep(path: str | Path) -> Sweep:
    """The sweep an experiment file defines (`SWEEP = Sweep(...)` or `def get_sweep() -> Sweep`), with its
    base config file and its directory filled in."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"experiment file not found: {path}")
    spec = importlib.util.spec_from_file_location(f"rft_sweep_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sweep = module.get_sweep() if callable(getattr(module, "get_sweep", None)) else getattr(module, "SWEEP", None)
    if not isinstance(sweep, Sweep):
        raise ValueError(f"{path} defines no sweep: add next to its CONFIG, e.g.\n"
                         "    from rft_jax.sweep import Sweep, grid\n"
                         '    SWEEP = Sweep(arms=grid({"optimizer.learning_rate": [1e-4, 3e-4]}), seeds=(0, 1))\n'
                         "(or a get_sweep() function returning one); see docs/sweeps.md")
    config = str(file.parent / sweep.config) if sweep.config else str(file)
    return dataclasses.replace(sweep, config=config, out_dir=sweep.out_dir or f"runs/sweeps/{file.stem}")
