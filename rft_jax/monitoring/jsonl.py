"""JSON Lines files: the run's durable, greppable record (metrics, rollouts, alarms).

Every line is written, flushed and fsynced on its own, so a crash (or a killed
job) loses at most the line being written, and a reader skips a torn last line.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any


def to_jsonable(value: Any) -> Any:
    """Plain JSON types from numpy/JAX scalars and arrays; non-finite floats become null.

    Strict JSON has no NaN, and browsers, jq and pandas choke on Python's `NaN` token.
    """
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (str, bool, int)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist"):  # numpy / jax arrays and scalars
        return to_jsonable(value.tolist())
    return str(value)


def append_jsonl(path: Path, records: Iterable[Mapping[str, Any]], *, overwrite: bool = False) -> None:
    """Append (or overwrite with) records as JSON lines, durable before returning."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w" if overwrite else "a", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(to_jsonable(record), ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSON Lines file, skipping blank and torn lines (a crash mid-write)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield record


def drop_after_step(path: Path, step: int) -> int:
    """Removes the records of steps after `step` (a resumed run redoes them, and its log must hold each step
    once); returns how many were dropped. A missing file is left missing."""
    if not path.exists():
        return 0
    records = list(read_jsonl(path))
    kept = [r for r in records if not isinstance(r.get("step"), int) or r["step"] <= step]
    if len(kept) != len(records):  # a new file moved over the old one: a kill here loses neither
        fresh = path.with_name(path.name + ".resume")
        append_jsonl(fresh, kept, overwrite=True)
        os.replace(fresh, path)
    return len(records) - len(kept)
