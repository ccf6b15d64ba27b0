"""`rft-jax data validate | split | convert | generate`: manage RFT JSONL datasets.

Kept free of JAX imports so validating a file starts in well under a second.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys
from typing import Annotated, Literal

import tyro

from rft_jax.data.convert import Selection, convert_path, parse_bound, parse_where
from rft_jax.data.problems import DatasetError
from rft_jax.data.split import split_examples
from rft_jax.data.summary import format_summary, summarize
from rft_jax.data.validate import load_dataset, validate_file, write_jsonl

GENERATORS = {
    "arithmetic": ("rft_jax.data.tasks.arithmetic", "generate_arithmetic"),
    "json_extraction": ("rft_jax.data.tasks.json_extraction", "generate_json_extraction"),
    "sql": ("rft_jax.data.tasks.sql", "generate_sql"),
}


@dataclasses.dataclass(frozen=True)
class ValidateOptions:
    """Report every problem in a JSONL file, then a summary; exit status 1 when there are errors."""

    file: tyro.conf.Positional[str]
    """The RFT JSONL file."""
    model: str | None = None
    """Tokenizer/chat template to measure prompt lengths with."""
    max_prompt_tokens: int | None = None
    """Flag prompts longer than this (needs --model)."""
    reward: str | None = None
    """Reward spec the data is for (name, module:function, JSON); if it needs reference answers, they are required."""
    require_reference: bool = False
    """Every example needs reference_answer."""
    json: bool = False
    """Print the summary as JSON."""


@dataclasses.dataclass(frozen=True)
class SplitOptions:
    """Seeded train/validation/test split."""

    file: tyro.conf.Positional[str]
    """The RFT JSONL file to split."""
    out_dir: str
    """Folder that receives OUT_DIR/NAME.jsonl for each part."""
    fractions: str = "train=0.8,validation=0.1,test=0.1"
    """Comma-separated name=fraction; written to OUT_DIR/NAME.jsonl."""
    seed: int = 0
    """Seed of the shuffle."""
    stratify_by: str | None = None
    """Metadata field to keep balanced across parts (e.g. difficulty)."""


@dataclasses.dataclass(frozen=True)
class ConvertOptions:
    """What you already have -> RFT JSONL: Bedrock invocation logs, OpenAI chat-completion logs,
    Parquet files (verl's columns too) and Hugging Face `datasets` save_to_disk folders."""

    logs: tyro.conf.Positional[str]
    """Logs: a JSONL file (.gz too) or a folder of them, e.g. a Bedrock S3 log prefix; or a table: a .parquet
    file, a folder of them, or a `datasets` save_to_disk folder."""
    out: str
    """The RFT JSONL file to write."""
    response_as_reference: bool = False
    """Use the logged response as reference_answer (else kept as metadata logged_response)."""
    model: tyro.conf.UseAppendAction[tuple[str, ...]] = ()
    """Keep calls to this model id, a glob such as 'amazon.nova-*'; repeat for several."""
    where: tyro.conf.UseAppendAction[tuple[str, ...]] = ()
    """KEY=VALUE: keep records whose metadata (Bedrock requestMetadata, OpenAI metadata, a table's columns) has it;
    repeat: all must hold."""
    since: str | None = None
    """Keep calls made on or after this ISO date or date-time (UTC unless it has an offset)."""
    until: str | None = None
    """Keep calls made on or before this ISO date or date-time; a bare date includes that whole day."""


@dataclasses.dataclass(frozen=True)
class GenerateOptions:
    """Write a built-in task dataset."""

    task: tyro.conf.Positional[Literal["arithmetic", "json_extraction", "sql"]]
    """The built-in task: arithmetic, json_extraction or sql."""
    out: str
    """The RFT JSONL file to write."""
    n: int = 200
    """Number of examples."""
    seed: int = 0
    """Seed of the generator."""
    levels: tuple[str, ...] = ()
    """Difficulty levels, comma- or space-separated (default: all)."""
    system: str | None = None
    """System prompt (default: the task's)."""
    instruction: str | None = None
    """Instruction appended to each question (default: the task's)."""


DataOptions = (Annotated[ValidateOptions, tyro.conf.subcommand("validate")]
               | Annotated[SplitOptions, tyro.conf.subcommand("split")]
               | Annotated[ConvertOptions, tyro.conf.subcommand("convert")]
               | Annotated[GenerateOptions, tyro.conf.subcommand("generate")])


def main(argv: list[str]) -> int:
    args = tyro.cli(DataOptions, args=argv, prog="rft-jax data", description=__doc__,
                    config=(tyro.conf.PositionalMetavarFromFieldName,))
    command = {ValidateOptions: ("validate", cmd_validate), SplitOptions: ("split", cmd_split),
               ConvertOptions: ("convert", cmd_convert), GenerateOptions: ("generate", cmd_generate)}
    name, run = command[type(args)]
    try:
        return run(args)
    except (DatasetError, OSError, ValueError) as err:  # user errors: a message, not a traceback
        print(f"rft-jax data {name}: {err}", file=sys.stderr)
        return 1


def cmd_validate(args: ValidateOptions) -> int:
    tokenizer = None
    if args.model:
        from rft_jax.model.tokenizer import load_tokenizer  # noqa: PLC0415 (heavy, and only needed for lengths)

        tokenizer = load_tokenizer(args.model)
    elif args.max_prompt_tokens:
        print("--max-prompt-tokens needs --model to count tokens", file=sys.stderr)
        return 2
    require = args.require_reference
    if args.reward:
        from rft_jax.rewards import build_reward  # noqa: PLC0415

        require = require or build_reward(args.reward).needs_reference
    result = validate_file(args.file, tokenizer=tokenizer, max_prompt_tokens=args.max_prompt_tokens,
                           require_reference=require)
    for problem in result.problems:
        print(problem.format(args.file))
    summary = summarize(result)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 1 if result.errors else 0


def cmd_split(args: SplitOptions) -> int:
    try:
        fractions = {k: float(v) for k, v in (item.split("=") for item in args.fractions.split(","))}
    except ValueError:
        raise ValueError(f"--fractions {args.fractions!r}: write name=fraction pairs separated by commas, "
                         "e.g. train=0.8,validation=0.1,test=0.1") from None
    parts = split_examples(load_dataset(args.file), fractions, seed=args.seed, stratify_by=args.stratify_by)
    os.makedirs(args.out_dir, exist_ok=True)
    for name, examples in parts.items():
        write_jsonl(os.path.join(args.out_dir, f"{name}.jsonl"), examples)
        print(f"{name}: {len(examples)} examples -> {os.path.join(args.out_dir, name + '.jsonl')}")
    return 0


def cmd_convert(args: ConvertOptions) -> int:
    selection = Selection(models=args.model, where=parse_where(args.where),
                          since=parse_bound(args.since, end=False) if args.since else None,
                          until=parse_bound(args.until, end=True) if args.until else None)
    report, unit = convert_path(args.logs, selection=selection, response_as_reference=args.response_as_reference)
    with open(args.out, "w", encoding="utf-8") as f:
        for record in report.records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    print("\n".join(report.summary(unit)))
    print(f"wrote {len(report.records)} records -> {args.out}")
    if not report.records and report.skipped:
        print(f"rft-jax data convert: no {unit} of {args.logs} could be converted (reasons above)", file=sys.stderr)
        return 1
    print(f"next: rft-jax data validate {args.out}")
    return 0


def cmd_generate(args: GenerateOptions) -> int:
    from rft_jax.data.tasks.prompt import PromptStyle  # noqa: PLC0415

    module_name, fn_name = GENERATORS[args.task]
    generate = getattr(importlib.import_module(module_name), fn_name)
    kwargs = {}
    levels = tuple(level for item in args.levels for level in item.split(",") if level)
    if levels:
        kwargs["levels"] = levels
    if args.system is not None or args.instruction is not None:
        default = generate.__kwdefaults__["prompt"]
        kwargs["prompt"] = PromptStyle(system=args.system if args.system is not None else default.system,
                                       instruction=args.instruction if args.instruction is not None
                                       else default.instruction)
    examples = generate(args.n, seed=args.seed, **kwargs)
    write_jsonl(args.out, examples)
    print(f"wrote {len(examples)} {args.task} examples -> {args.out}")
    return 0
