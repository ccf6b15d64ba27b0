"""`rft-jax reward test | serve | lambda`: test a reward, serve it over HTTP, or write it as an AWS Lambda.

A reward is a built-in name, module:function, a JSON spec or .json spec file, or an OpenAI grader JSON.
No JAX imports: these start in well under a second.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Annotated

import tyro


@dataclasses.dataclass(frozen=True)
class RewardTestOptions:
    """Score reference and known-bad answers; warn if the reward cannot separate them."""

    data: str
    """RFT JSONL file."""
    reward: str
    """Name, module:function, JSON spec, a .json spec file, or an OpenAI grader (JSON with a "type")."""
    bad: str | None = None
    """JSONL of known-bad completions: {"completion": ..., "id"?: ..., "kind"?: ...}."""
    limit: int | None = None
    """Use only the first N examples."""


@dataclasses.dataclass(frozen=True)
class RewardServeOptions:
    """Serve a reward at the managed services' reward-endpoint shape."""

    reward: tyro.conf.Positional[str]
    """Name, module:function, JSON spec, a .json spec file, or an OpenAI grader (JSON with a "type")."""
    host: str = "127.0.0.1"
    """Bind address (off loopback a token is required)."""
    port: int = 8000
    """TCP port."""
    token_env: str | None = None
    """Environment variable holding the bearer token (required off loopback)."""
    added_latency_s: float = 0.0
    """Seconds added to every request batch: stands in for a Lambda's or a judge's latency in benchmarks
    (benchmarks/async_rl.py serves with 2 s)."""
    max_body_mib: float = 16.0
    """Largest request body taken, in MiB; a larger one is refused (413) before it is read."""
    max_samples: int = 1024
    """Most samples one request may hold; more are refused (400). The remote reward sends batches of 32."""


@dataclasses.dataclass(frozen=True)
class RewardLambdaOptions:
    """Write an AWS Lambda handler, lambda_handler(event, context), around a reward: the reward function
    of a Bedrock / Nova RFT job. It embeds the spec and imports the reward's module; no JAX."""

    reward: tyro.conf.Positional[str]
    """Name, module:function, JSON spec, a .json spec file, or an OpenAI grader (JSON with a "type")."""
    out: str = "lambda_function.py"
    """The handler file to write; the Lambda handler setting is then <file name>.lambda_handler."""


RewardOptions = (Annotated[RewardTestOptions, tyro.conf.subcommand("test")]
                 | Annotated[RewardServeOptions, tyro.conf.subcommand("serve")]
                 | Annotated[RewardLambdaOptions, tyro.conf.subcommand("lambda")])
SUBCOMMANDS = {RewardTestOptions: "test", RewardServeOptions: "serve", RewardLambdaOptions: "lambda"}


def main(argv: list[str]) -> int:
    args = tyro.cli(RewardOptions, args=argv, prog="rft-jax reward", description=__doc__,
                    config=(tyro.conf.PositionalMetavarFromFieldName,))
    name = SUBCOMMANDS[type(args)]
    from rft_jax.data.problems import DatasetError  # noqa: PLC0415
    from rft_jax.rewards.scorer import build_reward  # noqa: PLC0415

    try:
        scorer = build_reward(args.reward)
        if isinstance(args, RewardTestOptions):
            from rft_jax.data.validate import load_dataset  # noqa: PLC0415

            examples = load_dataset(args.data, require_reference=scorer.needs_reference)[: args.limit]
    except (DatasetError, OSError, ValueError, ImportError, AttributeError) as err:
        print(f"rft-jax reward {name}: {err}", file=sys.stderr)
        return 2
    if isinstance(args, RewardTestOptions):
        from rft_jax.rewards.reward_test import format_report, run_reward_test  # noqa: PLC0415

        report = run_reward_test(scorer, examples, bad_file=args.bad)
        print(format_report(report))
        return 0 if report.ok() else 1
    if isinstance(args, RewardLambdaOptions):
        return cmd_lambda(args)
    return cmd_serve(args, scorer)


def cmd_lambda(args: RewardLambdaOptions) -> int:
    from rft_jax.rewards.remote.lambda_handler import write_handler  # noqa: PLC0415

    try:
        write_handler(args.reward, args.out)
    except OSError as err:
        print(f"rft-jax reward lambda: {err}", file=sys.stderr)
        return 2
    module = os.path.splitext(os.path.basename(args.out))[0]
    print(f"wrote {args.out}: set the Lambda's handler to {module}.lambda_handler and package it with the "
          "rft_jax package (see the file's docstring)")
    return 0


def cmd_serve(args: RewardServeOptions, scorer) -> int:
    from rft_jax.rewards.remote.server import check_binding, serve  # noqa: PLC0415

    token = os.environ.get(args.token_env) if args.token_env else None
    if args.token_env and not token:
        print(f"environment variable {args.token_env} is empty", file=sys.stderr)
        return 2
    try:
        check_binding(args.host, token)
    except ValueError as err:
        print(f"rft-jax reward serve: {err}", file=sys.stderr)
        return 2
    serve(scorer, host=args.host, port=args.port, token=token, added_latency_s=args.added_latency_s,
          max_body_bytes=int(args.max_body_mib * 2**20), max_samples=args.max_samples)
    return 0
