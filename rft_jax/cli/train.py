"""`rft-jax train [--config experiments/NAME.py] [--preset NAME] [--field.sub value ...]`.

The experiment file defines `CONFIG` (a TrainConfig); without --config the
defaults of TrainConfig are the starting point. `--preset` then sets a paper's
advantage and loss settings (rft_jax/grpo/presets.py: grpo, dapo, dr_grpo,
gspo, cispo, sapo, rloo), and every field can still be overridden on the
command line (tyro); `--help` documents all of them. Amazon Bedrock's RFT hyperparameter names work too
where they mean the same thing (--epochCount, --learningRate, --maxPromptLength, --inferenceMaxTokens,
--trainingSamplePerPrompt, --evalInterval; rft_jax/cli/bedrock_names.py, docs/migration.md).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import tyro

from rft_jax.cli import bedrock_names
from rft_jax.grpo.presets import PRESETS, apply_preset
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


def split_flag(argv: list[str], flag: str, example: str) -> tuple[str | None, list[str]]:
    """(the flag's value or None, argv without it); `--flag VALUE` and `--flag=VALUE` both work."""
    for i, arg in enumerate(argv):
        if arg == flag:
            if i + 1 == len(argv):
                raise ValueError(f"{flag} needs a value: {flag} {example}")
            return argv[i + 1], argv[:i] + argv[i + 2:]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1], argv[:i] + argv[i + 1:]
    return None, list(argv)


def split_config_arg(argv: list[str]) -> tuple[str | None, list[str]]:
    return split_flag(argv, "--config", "experiments/NAME.py")


def with_preset(cfg: TrainConfig, name: str) -> TrainConfig:
    """`cfg` with preset `name`'s advantage and loss settings (DAPO's overlong buffer scaled to its budget)
    and its dynamic-sampling switch."""
    advantage, loss = apply_preset(name, cfg.sampling.max_new_tokens)
    dynamic = dataclasses.replace(cfg.dynamic_sampling, enabled=PRESETS[name].dynamic_sampling)
    return dataclasses.replace(cfg, advantage=advantage, loss=loss, dynamic_sampling=dynamic)


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


def build_config(default: TrainConfig, argv: list[str], description: str | None = None) -> TrainConfig:
    """The run's config, without training: Bedrock's names translated, --preset applied to `default`, then
    every other flag (tyro exits on --help or a bad flag; ValueError for a refused name or a bad preset)."""
    argv = bedrock_names.translate(argv)
    preset, argv = split_flag(argv, "--preset", "|".join(sorted(PRESETS)))
    if preset:  # sized to the response budget the flags set (DAPO's overlong buffer), not the default's
        budget = cli(default, argv, description).sampling.max_new_tokens
        sampling = dataclasses.replace(default.sampling, max_new_tokens=budget)
        default = with_preset(dataclasses.replace(default, sampling=sampling), preset)
    return cli(default, argv, description)


def cli_with_default(default: TrainConfig, argv: list[str], description: str | None = None) -> int:
    """Builds the config from `default` and the command line, trains, prints the before/after table."""
    try:
        cfg = build_config(default, argv, description)
    except ValueError as err:
        print(f"rft-jax train: {err}", file=sys.stderr)
        return 2
    from rft_jax.train.loop import run  # noqa: PLC0415 (keeps --help fast)
    from rft_jax.train.report_table import print_before_after  # noqa: PLC0415

    try:
        results = run(cfg)
    except (ValueError, FileNotFoundError) as err:
        print(f"rft-jax train: {err}", file=sys.stderr)
        return 2
    print_before_after(results)
    return 0
