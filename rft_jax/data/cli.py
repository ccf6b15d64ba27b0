"""`rft-jax data validate | split | convert | generate`.

Kept free of JAX imports so validating a file starts in well under a second.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from rft_jax.data.convert import convert_lines
from rft_jax.data.problems import DatasetError
from rft_jax.data.split import split_examples
from rft_jax.data.summary import format_summary, summarize
from rft_jax.data.validate import load_dataset, validate_file, write_jsonl

GENERATORS = {
    "arithmetic": ("rft_jax.data.tasks.arithmetic", "generate_arithmetic"),
    "json_extraction": ("rft_jax.data.tasks.json_extraction", "generate_json_extraction"),
    "sql": ("rft_jax.data.tasks.sql", "generate_sql"),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rft-jax data", description="Manage RFT JSONL datasets.")
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("validate", help="report every problem in a JSONL file, then a summary")
    v.add_argument("file")
    v.add_argument("--model", help="tokenizer/chat template to measure prompt lengths with")
    v.add_argument("--max-prompt-tokens", type=int, help="flag prompts longer than this (needs --model)")
    v.add_argument("--reward", help="reward spec the data is for (name, module:function, JSON); "
                                    "a reward that needs reference answers makes them required")
    v.add_argument("--require-reference", action="store_true", help="every example needs reference_answer")
    v.add_argument("--json", action="store_true", help="print the summary as JSON")

    s = sub.add_parser("split", help="seeded train/validation/test split")
    s.add_argument("file")
    s.add_argument("--out-dir", required=True)
    s.add_argument("--fractions", default="train=0.8,validation=0.1,test=0.1",
                   help="comma-separated name=fraction; written to OUT_DIR/NAME.jsonl")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--stratify-by", help="metadata field to keep balanced across parts (e.g. difficulty)")

    c = sub.add_parser("convert", help="model-invocation logs -> RFT JSONL")
    c.add_argument("logs")
    c.add_argument("--out", required=True)
    c.add_argument("--response-as-reference", action="store_true",
                   help="use the logged response as reference_answer (else kept as logged_response)")

    g = sub.add_parser("generate", help="write a built-in task dataset")
    g.add_argument("task", choices=sorted(GENERATORS))
    g.add_argument("--n", type=int, default=200)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", required=True)
    g.add_argument("--levels", help="comma-separated difficulty levels (default: all)")
    g.add_argument("--system", help="system prompt (default: the task's)")
    g.add_argument("--instruction", help="instruction appended to each question (default: the task's)")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    command = {"validate": cmd_validate, "split": cmd_split, "convert": cmd_convert, "generate": cmd_generate}
    try:
        return command[args.command](args)
    except (DatasetError, OSError, ValueError) as err:  # user errors: a message, not a traceback
        print(f"rft-jax data {args.command}: {err}", file=sys.stderr)
        return 1


def cmd_validate(args: argparse.Namespace) -> int:
    tokenizer = None
    if args.model:
        from rft_jax.model.tokenizer import (
            load_tokenizer,  # lazy: heavy, and only needed for lengths
        )
        tokenizer = load_tokenizer(args.model)
    elif args.max_prompt_tokens:
        print("--max-prompt-tokens needs --model to count tokens", file=sys.stderr)
        return 2
    require = args.require_reference
    if args.reward:
        from rft_jax.rewards import build_reward
        require = require or build_reward(args.reward).needs_reference
    result = validate_file(args.file, tokenizer=tokenizer, max_prompt_tokens=args.max_prompt_tokens,
                           require_reference=require)
    for problem in result.problems:
        print(problem.format(args.file))
    summary = summarize(result)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 1 if result.errors else 0


def cmd_split(args: argparse.Namespace) -> int:
    fractions = {k: float(v) for k, v in (item.split("=") for item in args.fractions.split(","))}
    parts = split_examples(load_dataset(args.file), fractions, seed=args.seed, stratify_by=args.stratify_by)
    os.makedirs(args.out_dir, exist_ok=True)
    for name, examples in parts.items():
        write_jsonl(os.path.join(args.out_dir, f"{name}.jsonl"), examples)
        print(f"{name}: {len(examples)} examples -> {os.path.join(args.out_dir, name + '.jsonl')}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    with open(args.logs, encoding="utf-8") as f:
        records, skipped = convert_lines(f, response_as_reference=args.response_as_reference)
    with open(args.out, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"converted {len(records)} records -> {args.out}")
    if skipped:
        print(f"skipped {len(skipped)} lines without request messages: {skipped[:20]}", file=sys.stderr)
    print(f"next: rft-jax data validate {args.out}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    import importlib

    from rft_jax.data.tasks.prompt import PromptStyle
    module_name, fn_name = GENERATORS[args.task]
    generate = getattr(importlib.import_module(module_name), fn_name)
    kwargs = {}
    if args.levels:
        kwargs["levels"] = tuple(args.levels.split(","))
    if args.system is not None or args.instruction is not None:
        default = generate.__kwdefaults__["prompt"]
        kwargs["prompt"] = PromptStyle(system=args.system if args.system is not None else default.system,
                                       instruction=args.instruction if args.instruction is not None
                                       else default.instruction)
    examples = generate(args.n, seed=args.seed, **kwargs)
    write_jsonl(args.out, examples)
    print(f"wrote {len(examples)} {args.task} examples -> {args.out}")
    return 0
