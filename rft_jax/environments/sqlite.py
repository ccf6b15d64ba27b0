"""`sqlite`: a read-only SQL query tool over the example's database.

The example's metadata field (EnvironmentConfig.database_field, default "database";
the `sql_result` reward's `db_path` / `db_sql` are read too) holds either the path to
a SQLite file (ending .sqlite, .sqlite3 or .db; relative to the working directory),
opened read-only through a `file:...?mode=ro` URI, or SQL text that builds a fresh
in-memory database for the episode. Either way `PRAGMA query_only` is on and an
authorizer allows reading and nothing else (no writes, ATTACH, or pragma changes),
so a write fails as a tool error. A query stops at the call's timeout (a progress
handler interrupts it) and at most MAX_ROWS rows are shown.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import urllib.parse

from rft_jax.data.example import Example
from rft_jax.environments.base import ToolEnvironment, ToolError, function_schema

MAX_ROWS = 50
MAX_CELL_CHARS = 200
FILE_SUFFIXES = (".sqlite", ".sqlite3", ".db")
# Pragmas that only read the schema: the model may look at the tables.
READ_PRAGMAS = {"table_info", "table_xinfo", "table_list", "index_list", "index_info", "foreign_key_list"}
_READ_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                 getattr(sqlite3, "SQLITE_RECURSIVE", 33)}

SCHEMA = function_schema(
    "sql", "Run one read-only SQL query (SQLite dialect) against the database and return the rows as a table.",
    {"query": ("string", "a single SELECT statement")})


def authorize(action: int, arg1: str | None, arg2: str | None, *_: object) -> int:
    if action in _READ_ACTIONS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and arg1 in READ_PRAGMAS:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def database_of(example: Example, field: str) -> str:
    for key in (field, "db_path", "db_sql"):
        value = example.metadata.get(key)
        if isinstance(value, str) and value.strip():
            return value
    raise ValueError(f"the sqlite environment needs the example's database in metadata field {field!r} "
                     f"(a .sqlite file path or SQL text that builds it); example {example.id} has none")


def open_readonly(database: str) -> sqlite3.Connection:
    """A read-only connection: the file through a mode=ro URI, or SQL text built in memory and then locked."""
    if database.strip().lower().endswith(FILE_SUFFIXES):
        path = os.path.abspath(database.strip())
        if not os.path.isfile(path):
            raise ValueError(f"sqlite environment: database file {path} does not exist")
        conn = sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=ro", uri=True, check_same_thread=False)
    else:
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        conn.executescript(database)
    conn.execute("PRAGMA query_only = ON")
    conn.set_authorizer(authorize)
    return conn


def format_table(columns: list[str], rows: list[tuple], more: bool) -> str:
    """Rows as a small pipe-separated table under a header line."""
    def cell(value: object) -> str:
        text = "NULL" if value is None else str(value)
        return text if len(text) <= MAX_CELL_CHARS else text[:MAX_CELL_CHARS] + "..."

    lines = [" | ".join(columns)] + [" | ".join(cell(v) for v in row) for row in rows]
    if more:
        lines.append(f"... (only the first {len(rows)} rows are shown)")
    elif not rows:
        lines.append("(no rows)")
    return "\n".join(lines)


class SqliteEnvironment(ToolEnvironment):
    """One tool, `sql(query)`, over the database of the episode's example."""

    def __init__(self, *, database_field: str = "database", timeout_s: float = 5.0, max_rows: int = MAX_ROWS):
        super().__init__({"sql": self.query}, [SCHEMA], timeout_s=timeout_s)
        self.database_field = database_field
        self.max_rows = max_rows
        self.conn: sqlite3.Connection | None = None
        self._one_query = threading.Lock()

    def reset(self, example: Example) -> list[dict]:
        """Open the example's database; a missing or unreadable one is a data error (ValueError)."""
        self.close()
        database = database_of(example, self.database_field)
        try:
            self.conn = open_readonly(database)
        except sqlite3.Error as err:
            raise ValueError(f"sqlite environment: cannot open the database of example {example.id}: {err}") from err
        return []

    def query(self, query: str) -> str:
        if self.conn is None:
            raise ToolError("no database is open (the environment was not reset)")
        if not isinstance(query, str):
            raise ToolError("`query` must be a string of SQL")
        # The query is interrupted before the call's own timeout abandons its thread: a thread abandoned while
        # still inside execute() shared the connection with the next query's thread, and in CI that hung
        # the next call's thread start.
        deadline = time.monotonic() + 0.7 * self.timeout_s
        try:
            with self._one_query:  # never two threads on the connection, even if one was abandoned
                self.conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
                cursor = self.conn.execute(query)
                rows = cursor.fetchmany(self.max_rows + 1)
        except sqlite3.Error as err:
            if "not authorized" in str(err) or "readonly" in str(err):
                raise ToolError(f"the database is read-only; only SELECT queries are allowed ({err})") from None
            if "interrupted" in str(err):
                raise ToolError(f"the query took longer than {self.timeout_s:g} s") from None
            raise ToolError(f"{type(err).__name__}: {err}") from None
        except sqlite3.Warning as err:  # e.g. more than one statement
            raise ToolError(str(err)) from None
        columns = [d[0] for d in cursor.description or []]
        return format_table(columns, rows[: self.max_rows], len(rows) > self.max_rows)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
