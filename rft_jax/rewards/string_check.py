"""`string_check` and `regex_format`: exact-string and format rewards.

string_check follows the managed graders' operations: eq, ne, like (contains),
ilike (contains, case-insensitive).
"""

from __future__ import annotations

import re

from rft_jax.data.example import Example
from rft_jax.rewards.answer_extraction import extract_answer, last_nonempty_line

OPERATIONS = ("eq", "ne", "like", "ilike")


def select_text(completion: str, extract: str) -> str | None:
    """`full` (the whole completion, stripped), `last_line`, or an answer mode (answer_line, boxed, ...)."""
    if extract == "full":
        return completion.strip()
    if extract == "last_line":
        return last_nonempty_line(completion)
    return extract_answer(completion, extract)


def string_check(example: Example, completion: str, *, operation: str = "eq", extract: str = "full",
                 reference: str | None = None) -> float:
    """Compare the selected text with the reference (`reference` param, else the example's)."""
    if operation not in OPERATIONS:  # checked before extraction: a bad config fails even on unanswerable text
        raise ValueError(f"unknown operation {operation!r}; choose from {OPERATIONS}")
    target = str(reference if reference is not None else example.reference_answer)
    text = select_text(completion, extract)
    return 0.0 if text is None else float(compare(text, target, operation))


def compare(text: str, target: str, operation: str) -> bool:
    """eq / ne: equal or not (case-sensitive); like: `text` contains `target`; ilike: the same, ignoring case."""
    if operation not in OPERATIONS:
        raise ValueError(f"unknown operation {operation!r}; choose from {OPERATIONS}")
    if operation == "eq":
        return text == target
    if operation == "ne":
        return text != target
    if operation == "like":
        return target in text
    return target.lower() in text.lower()


def regex_format(example: Example, completion: str, *, pattern: str, where: str = "anywhere",
                 flags: str = "") -> float:
    """1.0 when the answer format is present: `where` is anywhere | last_line | full (whole text)."""
    compiled = re.compile(pattern, sum(getattr(re, f) for f in flags.upper()) if flags else 0)
    if where == "anywhere":
        return float(compiled.search(completion) is not None)
    if where == "last_line":
        line = last_nonempty_line(completion)
        return float(line is not None and compiled.fullmatch(line) is not None)
    if where == "full":
        return float(compiled.fullmatch(completion.strip()) is not None)
    raise ValueError(f"unknown where={where!r}; choose anywhere, last_line or full")


ANSWER_FORMAT = {"pattern": r"ANSWER: ?[-+]?\d+", "where": "last_line"}
"""`answer_format`: the last non-empty line is `ANSWER: <integer>` (the default experiment's format reward)."""
