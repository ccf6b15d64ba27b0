"""The `rft-jax` command: a thin dispatcher to one module per subcommand in this package.

Each `rft_jax.cli.<command>` parses a frozen options dataclass with tyro and calls
library functions; the CLIs sit on top of the import graph (no library package
imports `rft_jax.cli`). Imports are lazy: `rft-jax data validate` must not pay
for importing JAX.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, one-line help). Each module defines `main(argv: list[str]) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("rft_jax.cli.train", "GRPO reinforcement fine-tuning from an experiment config"),
    "sweep": ("rft_jax.cli.sweep", "train an experiment over its SWEEP of overrides and seeds (here or on Slurm)"),
    "sft": ("rft_jax.cli.sft", "supervised fine-tuning on assistant turns (warm start)"),
    "data": ("rft_jax.cli.data", "validate / split / convert / generate RFT JSONL datasets"),
    "reward": ("rft_jax.cli.reward", "test a reward on a dataset, serve it over HTTP, or write it as an AWS Lambda"),
    "baseline": ("rft_jax.cli.baseline", "measure the base model before training"),
    "eval": ("rft_jax.cli.eval", "evaluate a model or checkpoint on a dataset"),
    "report": ("rft_jax.cli.report", "HTML report of a training run"),
    "compare": ("rft_jax.cli.compare", "compare runs or a sweep: curves, mean ± CI over seeds, paired tests"),
    "generate": ("rft_jax.cli.generate", "sample completions from a model for chat prompts"),
    "serve": ("rft_jax.cli.serve", "OpenAI-compatible HTTP server for a model"),
    "migrate": ("rft_jax.cli.migrate", "an OpenAI RFT job as an `rft-jax train` command (grader kept)"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: rft-jax COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `rft-jax COMMAND --help` for the options of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the process's own command line: start it over with huge pages where that helps
        from rft_jax.hugepages import reexec_with_hugepages  # noqa: PLC0415

        reexec_with_hugepages()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"rft-jax: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name = COMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            print(f"rft-jax: command {name!r} is not available in this build ({err})", file=sys.stderr)
            return 2
        raise
    return int(module.main(rest) or 0)
