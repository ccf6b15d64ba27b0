"""`sql_result`: run the produced query read-only against a copy of the example's SQLite database.

The database comes from the example metadata: `db_sql` (a script, built fresh in
memory per completion) or `db_path` (a file, copied first). Safety: one statement
only; an authorizer allows reads and nothing else (no writes, ATTACH, PRAGMA
changes); `query_only` is on; a progress handler aborts queries past a time budget;
result rows are capped.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import sqlite3
import tempfile
import time

from rft_jax.data.example import Example
from rft_jax.rewards.result import RewardResult

_FENCE = re.compile(r"```(?:sql|sqlite)?\s*\n?(.*?)```", re.S | re.I)
_ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION}
_RECURSIVE = getattr(sqlite3, "SQLITE_RECURSIVE", 33)


def extract_sql(text: str) -> str:
    blocks = _FENCE.findall(text)
    return (blocks[-1] if blocks else text).strip().rstrip(";").strip()


def _authorizer(action: int, *args: object) -> int:
    return sqlite3.SQLITE_OK if action in _ALLOWED or action == _RECURSIVE else sqlite3.SQLITE_DENY


def open_copy(example: Example) -> tuple[sqlite3.Connection, str | None]:
    """A private connection to a copy of the example's database (and the temp dir to remove)."""
    if "db_sql" in example.metadata:
        conn = sqlite3.connect(":memory:")
        conn.executescript(example.metadata["db_sql"])
        return conn, None
    if "db_path" in example.metadata:
        tmp = tempfile.mkdtemp(prefix="rft-sql-")
        copy = os.path.join(tmp, "db.sqlite")
        shutil.copyfile(example.metadata["db_path"], copy)
        return sqlite3.connect(copy), tmp
    raise ValueError("example has neither metadata db_sql nor db_path")


def run_readonly(conn: sqlite3.Connection, query: str, *, timeout_s: float, max_rows: int) -> list[tuple]:
    deadline = time.monotonic() + timeout_s
    conn.execute("PRAGMA query_only = ON")
    conn.set_authorizer(_authorizer)
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    try:
        rows = conn.execute(query).fetchmany(max_rows + 1)
    finally:
        conn.set_authorizer(None)
        conn.set_progress_handler(None, 0)
    if len(rows) > max_rows:
        raise ValueError(f"query returned more than {max_rows} rows")
    return rows


def normalize_rows(rows: list[tuple], ordered: bool) -> list | collections.Counter:
    norm = [tuple(round(v, 6) if isinstance(v, float) else v for v in row) for row in rows]
    return norm if ordered else collections.Counter(norm)


def top_level_order_by(query: str) -> bool:
    """ORDER BY outside parentheses means the reference cares about row order."""
    depth, flat = 0, []
    for ch in query:
        depth += ch == "("
        flat.append(ch if depth == 0 else " ")
        depth -= ch == ")"
    return re.search(r"\border\s+by\b", "".join(flat), re.I) is not None


def sql_result(example: Example, completion: str, *, timeout_s: float = 2.0, max_rows: int = 10_000) -> RewardResult:
    """1.0 when the produced query returns the reference query's rows (as a multiset, or a
    list when the reference has a top-level ORDER BY); 0.0 otherwise, with the reason as a metric."""
    reference_query = str(example.reference_answer)
    query = extract_sql(completion)
    if not query:
        return RewardResult(0.0, metrics={"executed": 0.0, "match": 0.0, "refused": 0.0})
    conn, tmp = open_copy(example)
    try:
        expected = run_readonly(conn, reference_query, timeout_s=timeout_s, max_rows=max_rows)
        try:
            got = run_readonly(conn, query, timeout_s=timeout_s, max_rows=max_rows)
        except (sqlite3.Error, ValueError) as err:
            refused = "not authorized" in str(err) or "interrupted" in str(err)
            return RewardResult(0.0, metrics={"executed": 0.0, "match": 0.0, "refused": float(refused)})
    finally:
        conn.close()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    ordered = top_level_order_by(reference_query)
    match = normalize_rows(got, ordered) == normalize_rows(expected, ordered)
    return RewardResult(float(match), metrics={"executed": 1.0, "match": float(match), "refused": 0.0})


def render_reference(example: Example) -> str:
    return f"```sql\n{example.reference_answer}\n```"
