"""`rft-jax reward test | serve`. No JAX imports: these start in well under a second."""

from __future__ import annotations

import argparse
import os
import sys


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rft-jax reward", description="Test a reward, or serve one over HTTP.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("test", help="score reference and known-bad answers; warn if the reward cannot separate them")
    t.add_argument("--data", required=True, help="RFT JSONL file")
    t.add_argument("--reward", required=True, help="name, module:function, JSON spec, or a .json spec file")
    t.add_argument("--bad", help='JSONL of known-bad completions: {"completion": ..., "id"?: ..., "kind"?: ...}')
    t.add_argument("--limit", type=int, help="use only the first N examples")

    s = sub.add_parser("serve", help="serve a reward at the managed services' reward-endpoint shape")
    s.add_argument("reward", help="name, module:function, JSON spec, or a .json spec file")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--token-env", help="environment variable holding the bearer token (required off loopback)")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from rft_jax.data.problems import DatasetError
    from rft_jax.rewards.scorer import build_reward

    try:
        scorer = build_reward(args.reward)
        if args.command == "test":
            from rft_jax.data.validate import load_dataset
            examples = load_dataset(args.data, require_reference=scorer.needs_reference)[: args.limit]
    except (DatasetError, OSError, ValueError, ImportError, AttributeError) as err:
        print(f"rft-jax reward {args.command}: {err}", file=sys.stderr)
        return 2
    if args.command == "test":
        from rft_jax.rewards.reward_test import format_report, run_reward_test

        report = run_reward_test(scorer, examples, bad_file=args.bad)
        print(format_report(report))
        return 0 if report.ok() else 1
    from rft_jax.rewards.remote.server import check_binding, serve

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
