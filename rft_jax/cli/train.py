"""`rft-jax train --config experiments/NAME.py [--field.sub value ...]`.

The experiment file defines `CONFIG` (a TrainConfig); every field can be
overridden on the command line (tyro), and `--help` documents all of them.
Without --config the defaults of TrainConfig are the starting point.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import tyro

from rft_jax.train.config import TrainConfig


def load_experiment(path: str) -> TrainConfig:
    """The `CONFIG` TrainConfig that an experiment file defines."""
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


def split_config_arg(argv: list[str]) -> tuple[str | None, list[str]]:
    """(the --config path or None, argv without it); `--config PATH` and `--config=PATH` both work."""
    for i, arg in enumerate(argv):
        if arg == "--config":
            if i + 1 == len(argv):
                raise ValueError("--config needs a path: --config experiments/NAME.py")
            return argv[i + 1], argv[:i] + argv[i + 2:]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1], argv[:i] + argv[i + 1:]
    return None, list(argv)


def cli(default: TrainConfig, argv: list[str], description: str | None = None) -> TrainConfig:
    """`default` with the command line's overrides (tyro; exits on --help or a bad flag)."""
    return tyro.cli(TrainConfig, default=default, args=argv, prog="rft-jax train",
                    description=description or __doc__)


def main(argv: list[str]) -> int:
    try:
        path, argv = split_config_arg(argv)
        default = load_experiment(path) if path else TrainConfig()
    except (ValueError, FileNotFoundError) as err:
        print(f"rft-jax train: {err}", file=sys.stderr)
        return 2
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
