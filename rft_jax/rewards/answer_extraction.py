"""Finding the final answer in a completion: an ANSWER: line, \\boxed{}, `#### n`, or the last number."""

from __future__ import annotations

import re

from rft_jax.rewards.numbers import last_number_text

_ANSWER_LINE = re.compile(r"^\s*[*_#>\s]*answer[*_]*\s*[:：]\s*(.+?)\s*$", re.I | re.M)
_STRICT_LINE = re.compile(r"ANSWER: ?(\S.*?)")
_HASH = re.compile(r"^\s*####\s*(.+?)\s*$", re.M)


def last_nonempty_line(text: str) -> str | None:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else None


def strict_line(text: str) -> str | None:
    """The value on the last non-empty line when it is exactly `ANSWER: <value>`."""
    line = last_nonempty_line(text)
    match = _STRICT_LINE.fullmatch(line) if line else None
    return match.group(1).strip() if match else None


def answer_line(text: str) -> str | None:
    """The value of the last `ANSWER:` line anywhere (markdown emphasis tolerated)."""
    found = _ANSWER_LINE.findall(text)
    return found[-1].strip().strip("*_`").strip() if found else None


def boxed(text: str) -> str | None:
    """Contents of the last \\boxed{...}, with nested braces balanced."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None


def hash_answer(text: str) -> str | None:
    """The value on the last `#### <value>` line: GSM8K's final-answer marker, read from
    completions and (by math_answer) from GSM8K's worked-solution references."""
    found = _HASH.findall(text)
    return found[-1] if found else None


EXTRACTORS = {
    "strict_line": strict_line,
    "answer_line": answer_line,
    "boxed": boxed,
    "hash": hash_answer,
    "last_number": last_number_text,
}


def extract_answer(text: str, mode: str) -> str | None:
    """`mode` is an EXTRACTORS key, or "auto": answer line, then boxed, then `####`."""
    if mode == "auto":
        for name in ("answer_line", "boxed", "hash"):
            found = EXTRACTORS[name](text)
            if found is not None:
                return found
        return None
    if mode not in EXTRACTORS:
        raise ValueError(f"unknown answer mode {mode!r}; choose from auto, {', '.join(EXTRACTORS)}")
    return EXTRACTORS[mode](text)
