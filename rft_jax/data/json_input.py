"""Untrusted JSON in: a JSONL line or an HTTP body, read so that every failure is a ValueError that says why.

`json.loads` alone lets through, as other exceptions or as values that break later
code: invalid UTF-8 (UnicodeDecodeError), nesting deeper than Python's recursion
limit (RecursionError), integers of over 4,300 digits (a plain ValueError), and
unpaired surrogate escapes ("\\ud800"), which no UTF-8 writer can encode again.
`parse_json` turns each into a `JsonError`; `read_limited` stops reading a body at
its size limit instead of after it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

MAX_JSON_DEPTH = 100
"""Deepest nesting taken: records nest a handful of levels, and recursive code (the parser, jsonschema, a chat
template) fails somewhere past a few hundred."""


class JsonError(ValueError):
    """Text that is not one JSON value we can take; the message says what is wrong."""


class TooLarge(ValueError):
    """A body over its size limit (HTTP 413)."""


def parse_json(data: str | bytes) -> Any:
    """The JSON value of `data` (bytes must be UTF-8); raises JsonError and nothing else."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise JsonError(f"not valid UTF-8: byte {err.start} is {data[err.start:err.start + 1]!r}") from None
    try:
        value = json.loads(data)
    except json.JSONDecodeError as err:
        raise JsonError(f"bad JSON: {err.msg} at column {err.colno}") from None
    except RecursionError:
        raise JsonError(f"nested too deeply (over {MAX_JSON_DEPTH} levels of lists or objects)") from None
    except ValueError as err:  # e.g. an integer of more digits than Python converts
        raise JsonError(f"bad JSON: {err}") from None
    if depth(value) > MAX_JSON_DEPTH:
        raise JsonError(f"nested too deeply (over {MAX_JSON_DEPTH} levels of lists or objects)")
    if "\\u" in data and not encodable(value):  # only escapes can make a lone surrogate
        raise JsonError("a string holds an unpaired surrogate escape (\\ud800-\\udfff), which is not text")
    return value


def depth(value: Any) -> int:
    """Levels of lists and objects (0 for a scalar), walked without recursion; stops once past MAX_JSON_DEPTH."""
    if not isinstance(value, (dict, list)):
        return 0
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        deepest = max(deepest, level)
        if deepest > MAX_JSON_DEPTH:
            break
        stack.extend((c, level + 1) for c in children if isinstance(c, (dict, list)))
    return deepest


def encodable(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def read_limited(chunks: AsyncIterator[bytes], declared: str | None, limit: int) -> bytes:
    """A request body of at most `limit` bytes: refused on its Content-Length (`declared`) before reading, and
    cut off as soon as the bytes read pass the limit (a body sent chunked, or with a false length)."""
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise TooLarge(too_large(int(declared), limit))
    parts, size = [], 0
    async for part in chunks:
        size += len(part)
        if size > limit:
            raise TooLarge(too_large(size, limit, at_least=True))
        parts.append(part)
    return b"".join(parts)


def too_large(size: int, limit: int, at_least: bool = False) -> str:
    return (f"the request body is {'over ' if at_least else ''}{size} bytes; this server takes at most {limit} "
            "(send fewer or shorter items, or raise the server's --max-body-mib)")


def brief(value: Any, limit: int = 60) -> str:
    """repr of an untrusted value, cut short: error messages echo what was sent, never megabytes of it."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
