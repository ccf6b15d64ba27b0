"""`rft-jax train --config experiments/NAME.py [--field.sub value ...]`.

The experiment file defines `CONFIG` (a TrainConfig); every field can be
overridden on the command line (tyro), and `--help` documents all of them.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import tyro

from rft_jax.train.config import TrainConfig


def load_experiment(path: str) -> TrainConfig:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"experiment file not found: {path}")
    spec = importlib.util.spec_from_file_location(f"rft_experiment_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = getattr(module, "CONFIG", None)
    if not isinstance(config, TrainConfig):
        raise ValueError(f"{path} must define CONFIG = TrainConfig(...)")
    return config


def cli(default: TrainConfig, argv: list[str], description: str | None = None) -> TrainConfig:
    return tyro.cli(TrainConfig, default=default, args=argv, description=description or __doc__)


def main(argv: list[str]) -> int:
    default = TrainConfig()
    if "--config" in argv:
        i = argv.index("--config")
        default = load_experiment(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    return cli_with_default(default, argv)


def cli_with_default(default: TrainConfig, argv: list[str], description: str | None = None) -> int:
    """Parses overrides of `default`, trains, prints the before/after table."""
    cfg = cli(default, argv, description)
    from rft_jax.train.loop import run  # noqa: PLC0415 (keeps --help fast)
    from rft_jax.train.report_table import print_before_after  # noqa: PLC0415

    try:
        results = run(cfg)
    except (ValueError, FileNotFoundError) as err:
        print(f"rft-jax train: {err}", file=sys.stderr)
        return 2
    print_before_after(results)
    return 0
