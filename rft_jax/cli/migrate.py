"""`rft-jax migrate openai-job JOB.json`: an OpenAI reinforcement fine-tuning job as an `rft-jax train` command.

Reads the job as JSON (the body sent to POST /v1/fine_tuning/jobs, or the fine_tuning.job object the API
returns), writes its grader unchanged to a reward file, and prints a shell script: notes on what does not
carry over, as comments, then the command. docs/migration.md explains each mapping.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from typing import Any

import tyro

from rft_jax.cli.bedrock_names import reasoning_budgets
from rft_jax.data.reasoning import EFFORT_BUDGETS, ReasoningConfig

AUTO = "auto"
WHOLE = ("n_epochs", "batch_size", "eval_interval", "eval_samples")
"""Hyperparameters that count something: whole numbers of at least 1."""
MULTIPLIERS = ("learning_rate_multiplier", "compute_multiplier")
"""Hyperparameters that scale something: numbers above 0."""
TRAIN_PLACEHOLDER = "TRAIN.jsonl"
EFFORTS = ("default", *EFFORT_BUDGETS)
"""reasoning_effort levels: OpenAI's (default, low, medium, high), and minimal, which EFFORT_BUDGETS also maps."""
DEFAULT_EFFORT = "medium"
"""What OpenAI's 'default' level is: OpenAI's reasoning models before gpt-5.1 default to medium effort."""


@dataclasses.dataclass(frozen=True)
class OpenAIJobOptions:
    """Print the `rft-jax train` command for an OpenAI RFT job; write its grader, unchanged, to a reward file."""

    job: tyro.conf.Positional[str]
    """The job JSON file: a create-job request body or a fine_tuning.job object (method.type "reinforcement")."""
    model: str = "smollm2-135m-instruct"
    """The local base model to train instead of OpenAI's: a registry key, Hugging Face folder or .gguf file."""
    train_file: str | None = None
    """Your local copy of the job's training_file (default: FILE_ID.jsonl, the name the notes download it to)."""
    val_file: str | None = None
    """Your local copy of the job's validation_file (default: FILE_ID.jsonl)."""
    grader_out: str = "grader.json"
    """Where to write the job's grader (the command's --reward)."""


@dataclasses.dataclass
class Migration:
    """The `rft-jax train` flags for a job, and the notes on what does not map one to one."""

    flags: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def script(self, header: str) -> str:
        lines = [f"# {header}"] + [f"# - {note}" for note in self.notes]
        args = [f"    {flag} {shlex.quote(value)}" for flag, value in self.flags]
        return "\n".join(lines + ["rft-jax train \\", " \\\n".join(args)]) + "\n"


def reinforcement_method(job: dict) -> dict:
    method = job.get("method")
    if not isinstance(method, dict) or method.get("type") != "reinforcement":
        kind = method.get("type") if isinstance(method, dict) else None
        hint = " (`rft-jax sft` does supervised fine-tuning)" if kind == "supervised" else ""
        raise ValueError(f"not a reinforcement fine-tuning job: method.type is {kind!r}, expected 'reinforcement'{hint}")
    reinforcement = method.get("reinforcement")
    if not isinstance(reinforcement, dict) or not isinstance(reinforcement.get("grader"), dict):
        raise ValueError("the job has no method.reinforcement.grader object")
    return reinforcement


def hyperparameters(job: dict, reinforcement: dict) -> tuple[dict, list[str]]:
    """(the hyperparameters the job sets, the names it leaves 'auto'); ValueError naming a bad field.

    They sit in method.reinforcement.hyperparameters, or in the deprecated top-level `hyperparameters`.
    """
    where, hyper = "method.reinforcement.hyperparameters", reinforcement.get("hyperparameters")
    if not hyper:
        where, hyper = "hyperparameters", job.get("hyperparameters") or {}
    if not isinstance(hyper, dict):
        raise ValueError(f"{where} must be an object such as {{\"n_epochs\": 2, \"batch_size\": \"auto\"}}, "
                         f"got {hyper!r}: write 'auto' per field, or leave the field out")
    given = {k: v for k, v in hyper.items() if v is not None and v != AUTO}
    for key, value in given.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if key in WHOLE and not (number and isinstance(value, int) and value >= 1):
            raise ValueError(f"{where}.{key} must be a whole number of at least 1 or \"auto\", got {value!r}")
        if key in MULTIPLIERS and not (number and value > 0):
            raise ValueError(f"{where}.{key} must be a number above 0 or \"auto\", got {value!r}")
        if key == "reasoning_effort" and value not in EFFORTS:
            raise ValueError(f"{where}.reasoning_effort must be one of {', '.join(map(repr, EFFORTS))}, "
                             f"got {value!r}")
    return given, sorted(k for k, v in hyper.items() if v == AUTO)


def file_flag(migration: Migration, flag: str, file_id: Any, local: str | None, what: str) -> None:
    option = f"--{flag.split('.')[-1]}"
    if local:
        migration.flags.append((flag, local))
    elif isinstance(file_id, str) and file_id:
        migration.flags.append((flag, f"{file_id}.jsonl"))
        migration.notes.append(
            f"{what} is OpenAI file {file_id}: download it first (curl -sS "
            f"https://api.openai.com/v1/files/{file_id}/content -H \"Authorization: Bearer $OPENAI_API_KEY\" "
            f"-o {file_id}.jsonl), or name your copy with {option} when migrating")
    elif file_id is not None:
        raise ValueError(f"{what} must be an OpenAI file id such as \"file-abc123\", got {file_id!r}: "
                         f"fix it, or name your local copy with {option}")


def migrate_openai_job(job: dict, *, model: str, grader_path: str, train_file: str | None = None,
                       val_file: str | None = None, default_lr: float) -> tuple[Migration, dict]:
    """(the flags and notes, the checked grader to write to `grader_path`); ValueError naming the wrong field."""
    reinforcement = reinforcement_method(job)
    given, left_auto = hyperparameters(job, reinforcement)
    seed = job.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ValueError(f"seed must be a whole number, got {seed!r}")
    out = Migration()
    out.notes.append(f"model: OpenAI's {job.get('model', 'model')} cannot be trained outside OpenAI; this trains the "
                     f"local base model {model} (choose another with --model)")
    out.flags.append(("--model.name", model))
    if not (train_file or job.get("training_file")):
        train_file = TRAIN_PLACEHOLDER
        out.notes.append(f"training_file: the job names none; replace {TRAIN_PLACEHOLDER} with your training data "
                         "(or name it with --train-file when migrating)")
    file_flag(out, "--data.train-file", job.get("training_file"), train_file, "training_file")
    file_flag(out, "--data.val-file", job.get("validation_file"), val_file, "validation_file")
    out.flags.append(("--reward", grader_path))
    for key, flag in (("n_epochs", "--epochs"), ("batch_size", "--batch-size")):
        if key in given:
            out.flags.append((flag, str(given[key])))
    multiplier = given.get("learning_rate_multiplier")
    out.flags.append(("--optimizer.learning-rate", repr(default_lr)))
    out.notes.append(
        f"learning rate: rft_jax's default {default_lr!r} (LoRA)"
        + (f"; learning_rate_multiplier={multiplier} scales a base rate OpenAI does not publish, so it has no "
           "absolute equivalent: tune --optimizer.learning-rate on the validation reward" if multiplier else ""))
    if "eval_interval" in given:
        out.flags.append(("--evaluation.interval", str(given["eval_interval"])))
    if "reasoning_effort" in given:
        reasoning(out, given["reasoning_effort"])
    if seed is not None:
        out.flags.append(("--seed", str(seed)))
    if job.get("suffix"):
        out.flags.append(("--out-dir", f"runs/{job['suffix']}"))
    if "eval_samples" in given:
        out.notes.append(f"eval_samples={given['eval_samples']}: rft_jax validates with one greedy answer per "
                         "prompt; for several samples per prompt (pass@k) run `rft-jax eval --samples K` afterwards")
    if "compute_multiplier" in given:
        out.notes.append(f"compute_multiplier={given['compute_multiplier']}: no equivalent; the nearest knob is "
                         "--sampling.samples-per-prompt (more responses per prompt explore more)")
    if left_auto:
        out.notes.append(f"{', '.join(left_auto)}: 'auto', so rft_jax's defaults apply")
    return out, checked_grader(reinforcement["grader"])


def reasoning(migration: Migration, effort: str) -> None:
    """reasoning_effort as reasoning mode with that level's think budget (EFFORT_BUDGETS), and a note on it."""
    level = DEFAULT_EFFORT if effort == "default" else effort
    said = f"reasoning_effort={effort}" + (f" ({level}, OpenAI's default level)" if level != effort else "")
    if not EFFORT_BUDGETS[level]:
        migration.notes.append(f"{said}: a think budget of 0 tokens, so reasoning stays off (rft_jax's default) "
                               "and the policy answers directly")
        return
    think, answer = reasoning_budgets(level)
    migration.flags += [("--reasoning.mode", "on"), ("--reasoning.think-budget", str(think))]
    cut = (f", {EFFORT_BUDGETS[level]} less the answer's {answer} so the completion fits rft_jax's limit"
           if think < EFFORT_BUDGETS[level] else "")
    migration.notes.append(
        f"{said}: reasoning mode with a think budget of {think} tokens{cut}; the job sets no completion size, so "
        f"the answer keeps its default {answer} tokens and the completion budget (--sampling.max-new-tokens) "
        f"becomes {think + answer}; the reward then reads only the answer after {ReasoningConfig.close_tag}")


def checked_grader(grader: dict) -> dict:
    """The grader, once rft_jax has checked it runs it: an unsupported one fails before anything is written."""
    from rft_jax.rewards.spec import parse_spec  # noqa: PLC0415

    try:
        parse_spec(grader)
    except (ValueError, TypeError) as err:
        raise ValueError(f"method.reinforcement.grader: {err}") from None
    return grader


def read_job(path: str) -> dict:
    """The job file as a dict; ValueError naming the file when it is not a JSON object."""
    with open(path, encoding="utf-8") as f:
        try:
            job = json.load(f)
        except ValueError as err:  # json.JSONDecodeError, UnicodeDecodeError
            raise ValueError(f"{path}: not valid JSON ({err}); save the job as the API returns it "
                             "(GET /v1/fine_tuning/jobs/ID) or the body you POST to create it") from None
    if not isinstance(job, dict):
        raise ValueError(f"{path}: a fine-tuning job is a JSON object, got {type(job).__name__}")
    return job


def cmd_openai_job(args: OpenAIJobOptions) -> int:
    # Only for the default learning rate. The import pulls JAX (the config's field types come from modules that
    # import it), but reading the default keeps one source for it.
    from rft_jax.train.config import TrainConfig  # noqa: PLC0415

    job = read_job(args.job)
    try:
        migration, grader = migrate_openai_job(job, model=args.model, grader_path=args.grader_out,
                                               train_file=args.train_file, val_file=args.val_file,
                                               default_lr=TrainConfig().optimizer.learning_rate)
    except ValueError as err:
        raise ValueError(f"{args.job}: {err}") from None
    with open(args.grader_out, "w", encoding="utf-8") as f:
        json.dump(grader, f, indent=2, ensure_ascii=False)
        f.write("\n")
    name = job.get("id") or args.job
    print(migration.script(f"rft-jax equivalent of OpenAI fine-tuning job {name}; its grader, unchanged, "
                           f"is in {args.grader_out}"), end="")
    return 0


def main(argv: list[str]) -> int:
    args = tyro.extras.subcommand_cli_from_dict({"openai-job": OpenAIJobOptions}, args=argv, prog="rft-jax migrate",
                                                description=__doc__, config=(tyro.conf.PositionalMetavarFromFieldName,))
    try:
        return cmd_openai_job(args)
    except (OSError, ValueError) as err:  # json.JSONDecodeError is a ValueError
        print(f"rft-jax migrate openai-job: {err}", file=sys.stderr)
        return 2
