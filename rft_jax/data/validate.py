"""Read and validate an RFT JSONL file: the one code path for `data validate` and training.

Training calls `load_examples`, which runs exactly this validation and raises on any
error, so a run never starts on a file that `rft-jax data validate` would reject. Two
findings are let through when the caller says so: prompts over the token limit, which
a run leaves out (`skip_too_long`), and repeated prompts, which an evaluation set may
hold (`allow_duplicate_prompts`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any, Protocol

from rft_jax.data.checks import check_record
from rft_jax.data.example import Example, flatten_messages, from_record, prompt_key
from rft_jax.data.json_input import JsonError, brief, parse_json
from rft_jax.data.problems import DatasetError, Problem
from rft_jax.data.reasoning import PlannedChat


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


def validate_lines(lines: Sequence[str | bytes], *, tokenizer: ChatTokenizer | None = None,
                   max_prompt_tokens: int | None = None, require_reference: bool = False,
                   allow_duplicate_prompts: bool = False) -> Validation:
    """Every problem of every line (a line is text, or the raw bytes of a file's line); with
    `allow_duplicate_prompts`, a repeated prompt is a warning."""
    examples, where, problems = [], [], []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            record = parse_json(text)
        except JsonError as err:
            problems.append(Problem(number, "(line)", str(err), "fix the line; each line must be one complete "
                                    "JSON object in UTF-8"))
            continue
        found = check_record(record, number, require_reference=require_reference)
        problems += found
        if not found:
            examples.append(from_record(record))
            where.append(number)
    problems += duplicate_problems(examples, where, allow_duplicate_prompts)
    lengths = None
    if tokenizer is not None:
        lengths, unrendered = prompt_lengths(tokenizer, examples, where)
        problems += unrendered
        if max_prompt_tokens is not None:
            problems += too_long_problems(where, lengths, max_prompt_tokens)
    problems.sort(key=lambda p: p.line)
    return Validation(examples, where, problems, lengths)


def prompt_lengths(tokenizer: ChatTokenizer, examples: list[Example], lines: list[int]
                   ) -> tuple[list[int], list[Problem]]:
    """Prompt tokens per example as training renders them (tools placed by `render_prompt`, so a template that
    ignores `tools` is counted with the fallback description), and a problem for each prompt that cannot be
    rendered (tools that would not reach the prompt)."""
    chat = tokenizer if isinstance(tokenizer, PlannedChat) else PlannedChat(tokenizer, None)
    lengths, problems = [], []
    for ex, number in zip(examples, lines):
        try:
            lengths.append(len(chat.apply_chat_template(flatten_messages(ex.prompt_messages), tools=ex.tools,
                                                        add_generation_prompt=True)))
        except ValueError as err:
            if not ex.tools:
                raise
            lengths.append(0)
            problems.append(Problem(number, "tools", str(err), "see docs/tools.md"))
    return lengths, problems


def too_long_problems(lines: list[int], lengths: list[int], limit: int) -> list[Problem]:
    return [Problem(n, "messages", f"prompt is {k} tokens, over the limit of {limit}",
                    "shorten the prompt, or raise --max-prompt-tokens")
            for n, k in zip(lines, lengths) if k > limit]


def earlier(keys: list) -> list[int | None]:
    """For each key, the index of its first occurrence when that is an earlier one (else None)."""
    first: dict = {}
    out = []
    for i, key in enumerate(keys):
        out.append(first.get(key))
        first.setdefault(key, i)
    return out


def repeated_prompts(examples: list[Example]) -> list[int]:
    """Indices of the examples whose prompt (roles and text, whitespace-normalised) came earlier in the list."""
    return [i for i, j in enumerate(earlier([prompt_key(ex.messages) for ex in examples])) if j is not None]


def duplicate_problems(examples: list[Example], lines: list[int], allow_duplicate_prompts: bool = False
                       ) -> list[Problem]:
    repeat = "warning" if allow_duplicate_prompts else "error"
    keys = [prompt_key(ex.messages) for ex in examples]
    problems = []
    for i, j in enumerate(earlier([ex.id for ex in examples])):
        if j is not None:
            # The same prompt under the same id is a repeated prompt (an id generated from the content
            # repeats with it); one id on two different prompts is always an error.
            problems.append(Problem(lines[i], "id", f"duplicate id {brief(examples[i].id)} (first on line {lines[j]})",
                                    "give every example a unique id", repeat if keys[i] == keys[j] else "error"))
    for i, j in enumerate(earlier(keys)):
        if j is not None:
            problems.append(Problem(lines[i], "messages", f"duplicate prompt (same as line {lines[j]})",
                                    "remove the duplicate; duplicates over-weight a prompt and leak across splits",
                                    repeat))
    return problems


def id_list(ids: list[str], shown: int = 5) -> str:
    """The first few ids, then how many more: for messages about many examples."""
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return ", ".join(ids[:shown]) + more


def read_lines(path: str) -> list[bytes]:
    """The file's lines as bytes, decoded per line by validation so that bad UTF-8 is reported on its line.

    Split on "\n" only: str.splitlines also splits at U+2028, U+0085 and other characters that JSON text
    written with ensure_ascii=False (write_jsonl) holds unescaped inside its strings."""
    with open(path, "rb") as f:
        data = f.read()
    lines = [line.removesuffix(b"\r") for line in data.split(b"\n")]
    lines[0] = lines[0].removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark, as some editors write
    return lines


def validate_file(path: str, **kwargs: Any) -> Validation:
    return validate_lines(read_lines(path), **kwargs)


@dataclasses.dataclass(frozen=True)
class Loaded:
    """A file read for a run or an evaluation: the examples kept, and the ids of those let through or left out."""

    examples: list[Example]
    repeated: list[str]  # kept, though their prompt came earlier in the file (with allow_duplicate_prompts)
    too_long: list[str]  # left out: prompt over max_prompt_tokens (with skip_too_long)


def load_examples(path: str, *, tokenizer: ChatTokenizer | None = None, max_prompt_tokens: int | None = None,
                  require_reference: bool = False, allow_duplicate_prompts: bool = False,
                  skip_too_long: bool = False) -> Loaded:
    """Load a JSONL file; raises DatasetError listing every problem.

    `skip_too_long` leaves out prompts over `max_prompt_tokens` instead of refusing the
    file (a few long prompts should not stop a run), unless no prompt is left.
    """
    result = validate_file(path, tokenizer=tokenizer, max_prompt_tokens=None if skip_too_long else max_prompt_tokens,
                           require_reference=require_reference, allow_duplicate_prompts=allow_duplicate_prompts)
    if result.errors:
        raise DatasetError(path, result.problems)
    examples, lines = result.examples, result.lines
    repeated = [examples[i].id for i in repeated_prompts(examples)] if allow_duplicate_prompts else []
    if not (skip_too_long and max_prompt_tokens is not None and result.prompt_tokens is not None):
        return Loaded(examples, repeated, [])
    fits = [k <= max_prompt_tokens for k in result.prompt_tokens]
    if examples and not any(fits):
        raise DatasetError(path, too_long_problems(lines, result.prompt_tokens, max_prompt_tokens))
    return Loaded([ex for ex, ok in zip(examples, fits) if ok], repeated,
                  [ex.id for ex, ok in zip(examples, fits) if not ok])


def load_dataset(path: str, *, tokenizer: ChatTokenizer | None = None, max_prompt_tokens: int | None = None,
                 require_reference: bool = False) -> list[Example]:
    """Load a JSONL file, refusing it on any problem (a prompt over the limit too); raises DatasetError."""
    return load_examples(path, tokenizer=tokenizer, max_prompt_tokens=max_prompt_tokens,
                         require_reference=require_reference).examples


def write_jsonl(path: str, examples: list[Example]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(ex.to_record(), ensure_ascii=False) + "\n")
