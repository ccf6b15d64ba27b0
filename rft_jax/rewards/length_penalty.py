"""`length_penalty`: 0 inside a target length band, falling linearly to -1 outside it.

Meant as a weighted component of an `aggregate`, to discourage rambling (or
truncated) answers without changing which answers are correct.
"""

from __future__ import annotations

from rft_jax.data.example import Example


def length_penalty(example: Example, completion: str, *, min_len: int = 0, max_len: int = 512,
                   unit: str = "words", scale: int | None = None) -> float:
    """`unit`: words or chars. `scale`: how far outside the band the penalty reaches -1 (default: max_len)."""
    if unit not in ("words", "chars"):
        raise ValueError(f"unit must be words or chars, got {unit!r}")
    length = len(completion.split()) if unit == "words" else len(completion)
    distance = max(0, min_len - length, length - max_len)
    return -min(1.0, distance / float(scale or max(max_len, 1)))
