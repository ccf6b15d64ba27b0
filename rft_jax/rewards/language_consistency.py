"""`language_consistency`: penalise answers that switch script (language) mid-answer.

RL on multilingual models is known to drift into mixed-language reasoning. We judge
by Unicode script of letters, which needs no language model: the share of letters
in the expected script (from the example metadata `script`, the parameter, or the
prompt's dominant script). Code blocks and inline code are ignored.
"""

from __future__ import annotations

import collections
import re
import unicodedata

from rft_jax.data.example import Example, message_text

_CODE = re.compile(r"```.*?```|`[^`]*`", re.S)
SCRIPTS = ("LATIN", "CYRILLIC", "GREEK", "ARABIC", "HEBREW", "DEVANAGARI", "HANGUL", "HIRAGANA", "KATAKANA",
           "CJK", "THAI", "ARMENIAN", "GEORGIAN", "BENGALI", "TAMIL")


def script_of(char: str) -> str | None:
    if not char.isalpha():
        return None
    name = unicodedata.name(char, "")
    for script in SCRIPTS:
        if name.startswith(script):
            return "CJK" if script in ("HIRAGANA", "KATAKANA") else script  # Japanese mixes these with kanji
    return "OTHER"


def script_counts(text: str) -> collections.Counter:
    return collections.Counter(s for s in map(script_of, _CODE.sub(" ", text)) if s)


def language_consistency(example: Example, completion: str, *, script: str | None = None) -> float:
    """Share of letters in the expected script: 1.0 for a consistent answer, less for a mixed one."""
    counts = script_counts(completion)
    total = sum(counts.values())
    if not total:
        return 1.0
    expected = (script or example.metadata.get("script")
                or _dominant(" ".join(message_text(m) for m in example.prompt_messages)) or counts.most_common(1)[0][0])
    return counts.get(expected.upper(), 0) / total


def _dominant(text: str) -> str | None:
    counts = script_counts(text)
    return counts.most_common(1)[0][0] if counts else None
