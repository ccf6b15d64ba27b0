"""`rft-jax reward test | serve`: test a reward, or serve one over HTTP.

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
    """Name, module:function, JSON spec, or a .json spec file."""
    bad: str | None = None
    """JSONL of known-bad completions: {"completion": ..., "id"?: ..., "kind"?: ...}."""
    limit: int | None = None
    """Use only the first N examples."""


@dataclasses.dataclass(frozen=True)
class RewardServeOptions:
    """Serve a reward at the managed services' reward-endpoint shape."""

    reward: tyro.conf.Positional[str]
    """Name, module:function, JSON spec, or a .json spec file."""
    host: str = "127.0.0.1"
    """Bind address (off loopback a token is required)."""
    port: int = 8000
    """TCP port."""
    token_env: str | None = None
    """Environment variable holding the bearer token (required off loopback)."""


RewardOptions = (Annotated[RewardTestOptions, tyro.conf.subcommand("test")]
                 | Annotated[RewardServeOptions, tyro.conf.subcommand("serve")])


def main(argv: list[str]) -> int:
    args = tyro.cli(RewardOptions, args=argv, prog="rft-jax reward", description=__doc__,
                    config=(tyro.conf.PositionalMetavarFromFieldName,))
    name = "test" if isinstance(args, RewardTestOptions) else "serve"
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
    return cmd_serve(args, scorer)


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
    serve(scorer, host=args.host, port=args.port, token=token)
    return 0
