"""Read and validate an RFT JSONL file: the one code path for `data validate` and training.

Training calls `load_dataset`, which runs exactly this validation and raises on any
error, so a run never starts on a file that `rft-jax data validate` would reject.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Protocol

from rft_jax.data.checks import check_record
from rft_jax.data.example import Example, from_record, prompt_key
from rft_jax.data.problems import DatasetError, Problem


class ChatTokenizer(Protocol):
    def apply_chat_template(self, messages: list[dict], tools: list | None = None,
                            add_generation_prompt: bool = True) -> list[int]: ...


@dataclasses.dataclass(frozen=True)
class Validation:
    examples: list[Example]
    lines: list[int]  # the file line of each example
    problems: list[Problem]
    prompt_tokens: list[int] | None  # per example, when a tokenizer was given

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


def validate_lines(lines: list[str], *, tokenizer: ChatTokenizer | None = None,
                   max_prompt_tokens: int | None = None, require_reference: bool = False) -> Validation:
    examples, where, problems = [], [], []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            problems.append(Problem(number, "(line)", f"bad JSON: {err.msg} at column {err.colno}",
                                    "fix the JSON; each line must be one complete object"))
            continue
        found = check_record(record, number, require_reference=require_reference)
        problems += found
        if not found:
            examples.append(from_record(record))
            where.append(number)
    problems += duplicate_problems(examples, where)
    lengths = None
    if tokenizer is not None:
        lengths = [len(tokenizer.apply_chat_template(ex.prompt_messages, tools=ex.tools, add_generation_prompt=True))
                   for ex in examples]
        if max_prompt_tokens is not None:
            problems += [Problem(n, "messages", f"prompt is {k} tokens, over the limit of {max_prompt_tokens}",
                                 "shorten the prompt, or raise --max-prompt-tokens")
                         for n, k in zip(where, lengths) if k > max_prompt_tokens]
    problems.sort(key=lambda p: p.line)
    return Validation(examples, where, problems, lengths)


def duplicate_problems(examples: list[Example], lines: list[int]) -> list[Problem]:
    problems = []
    seen_ids: dict[str, int] = {}
    seen_prompts: dict[str, int] = {}
    for ex, line in zip(examples, lines):
        if ex.id in seen_ids:
            problems.append(Problem(line, "id", f"duplicate id {ex.id!r} (first on line {seen_ids[ex.id]})",
                                    "give every example a unique id"))
        seen_ids.setdefault(ex.id, line)
        key = prompt_key(ex.messages)
        if key in seen_prompts:
            problems.append(Problem(line, "messages", f"duplicate prompt (same as line {seen_prompts[key]})",
                                    "remove the duplicate; duplicates over-weight a prompt and leak across splits"))
        seen_prompts.setdefault(key, line)
    return problems


def read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def validate_file(path: str, **kwargs: Any) -> Validation:
    return validate_lines(read_lines(path), **kwargs)


def load_dataset(path: str, *, tokenizer: ChatTokenizer | None = None, max_prompt_tokens: int | None = None,
                 require_reference: bool = False) -> list[Example]:
    """Load a JSONL file for training; raises DatasetError listing every problem."""
    result = validate_file(path, tokenizer=tokenizer, max_prompt_tokens=max_prompt_tokens,
                           require_reference=require_reference)
    if result.errors:
        raise DatasetError(path, result.problems)
    return result.examples


def write_jsonl(path: str, examples: list[Example]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(ex.to_record(), ensure_ascii=False) + "\n")
