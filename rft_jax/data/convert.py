"""Turn what teams already have into RFT JSONL: model-invocation logs become training prompts.

Each log line is read by the reader for its shape (one module per source):
  Bedrock model-invocation logs (schemaType "ModelInvocationLog")          -> logs_bedrock
  OpenAI chat-completion logs and the generic {"messages", "response"} shape -> logs_openai
  (a CloudWatch Logs event whose "message" holds the log record as text is unwrapped first, and the
  `<ISO timestamp> <record>` lines of a CloudWatch Logs export to S3 lose their timestamp)
Parquet files and Hugging Face `datasets` folders go through tables.py into the same pipeline.
Then: keep the calls the Selection asks for (model, metadata, dates), drop repeated prompts,
and write each as an RFT record. The logged response is the old model's answer, not a verified
one, so it is kept as metadata `logged_response` unless the user makes it the `reference_answer`.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import fnmatch
import gzip
import json
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

from rft_jax.data.chat_text import UnusableRecord
from rft_jax.data.example import prompt_key
from rft_jax.data.logged_call import LoggedCall, metadata_text, parse_time, rft_record
from rft_jax.data.logs_bedrock import bedrock_call, is_bedrock_log
from rft_jax.data.logs_openai import openai_call
from rft_jax.data.tables import is_table, read_table_rows, row_call

LOG_SUFFIXES = (".json", ".jsonl", ".gz")  # .gz: Bedrock S3 delivery and CloudWatch exports


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which calls to keep; every condition given must hold."""

    models: tuple[str, ...] = ()
    """Glob patterns on the source model id (`amazon.nova-*`); any one may match."""
    where: tuple[tuple[str, str], ...] = ()
    """(key, value) pairs the call's metadata must all equal."""
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    """Inclusive bounds on the call's time; a call without a time fails either."""

    def rejects(self, call: LoggedCall) -> str | None:
        """The first condition the call fails: 'model', 'metadata' or 'date'; None to keep it."""
        if self.models and not any(fnmatch.fnmatchcase(call.model or "", p) for p in self.models):
            return "model"
        if any(key not in call.metadata or metadata_text(call.metadata[key]) != value for key, value in self.where):
            return "metadata"
        if (self.since or self.until) and not (
                call.timestamp and (self.since is None or call.timestamp >= self.since)
                and (self.until is None or call.timestamp <= self.until)):
            return "date"
        return None


def parse_where(items: Iterable[str]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--where {item!r}: write KEY=VALUE, e.g. --where team=search")
        pairs.append((key, value))
    return tuple(pairs)


def parse_bound(text: str, *, end: bool) -> dt.datetime:
    """An ISO date or date-time as a UTC bound; a bare date as an end bound covers that whole day."""
    when = parse_time(text)
    if when is None:
        raise ValueError(f"{text!r} is not an ISO date: write 2025-06-01 or 2025-06-01T12:00:00Z")
    if end and len(text.strip()) == 10:
        when = dt.datetime.combine(when.date(), dt.time.max, tzinfo=when.tzinfo)
    return when


@dataclasses.dataclass
class ConvertReport:
    records: list[dict] = dataclasses.field(default_factory=list)
    read: int = 0
    skipped: list[tuple[str, int, str]] = dataclasses.field(default_factory=list)
    """(source, line or row number, why)."""
    filtered: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    """Calls left out by the Selection, by the condition they failed."""
    duplicates: int = 0
    sources: set[str] = dataclasses.field(default_factory=set)
    """The files read: skips are located by file name when there were several."""

    def summary(self, unit: str = "line", limit: int = 20) -> list[str]:
        """Lines for the user: the counts, then where and why each skipped record was skipped."""
        filtered = sum(self.filtered.values())
        by = f" ({', '.join(f'{k}: {n}' for k, n in sorted(self.filtered.items()))})" if filtered else ""
        lines = [f"read {self.read} records: {len(self.records)} converted, {len(self.skipped)} skipped, "
                 f"{filtered} filtered out{by}, {self.duplicates} duplicate prompts removed"]
        for source, number, why in self.skipped[:limit]:
            lines.append(f"  skipped {source + ' ' if len(self.sources) > 1 else ''}{unit} {number}: {why}")
        if len(self.skipped) > limit:
            lines.append(f"  ... and {len(self.skipped) - limit} more skipped")
        return lines


def convert_items(items: Iterable[tuple[str, int, Any]], read: Callable[[Any], LoggedCall], *,
                  selection: Selection = Selection(), response_as_reference: bool = False) -> ConvertReport:
    """Read, select and de-duplicate (first prompt wins) any source's items."""
    report = ConvertReport()
    seen: set[str] = set()
    for source, number, item in items:
        report.read += 1
        report.sources.add(source)
        try:
            call = read(item)
        except UnusableRecord as err:
            report.skipped.append((source, number, str(err)))
            continue
        except (AttributeError, TypeError, KeyError, IndexError) as err:  # a field of an unexpected type
            report.skipped.append((source, number, f"unexpected structure ({type(err).__name__}: {err})"))
            continue
        rejected = selection.rejects(call)
        if rejected:
            report.filtered[rejected] += 1
            continue
        key = prompt_key(call.messages)
        if key in seen:
            report.duplicates += 1
            continue
        seen.add(key)
        report.records.append(rft_record(call, response_as_reference=response_as_reference))
    return report


def without_timestamp(text: str) -> str:
    """A CloudWatch Logs export to S3 writes each event as `<ISO timestamp> <message>`: the message alone."""
    stamp, _, rest = text.strip().partition(" ")
    if rest.lstrip().startswith("{") and parse_time(stamp) is not None:
        return rest
    return text


def log_call(text: str) -> LoggedCall:
    """One log line, whichever known shape it has."""
    try:
        record = json.loads(without_timestamp(text))
    except json.JSONDecodeError as err:
        raise UnusableRecord(f"not JSON ({err.msg})") from None
    if not isinstance(record, dict):
        raise UnusableRecord(f"a JSON {type(record).__name__}, not an object")
    if isinstance(record.get("message"), str) and record["message"].lstrip().startswith("{"):
        return log_call(record["message"])  # a CloudWatch Logs event wrapping the record
    return bedrock_call(record) if is_bedrock_log(record) else openai_call(record)


def convert_logs(lines: Iterable[tuple[str, int, str]], **kwargs: Any) -> ConvertReport:
    """(source, line number, text) log lines -> report; blank lines are not records."""
    return convert_items(((s, n, text) for s, n, text in lines if text.strip()), log_call, **kwargs)


def convert_lines(lines: Iterable[str], **kwargs: Any) -> tuple[list[dict], list[int]]:
    """Converted records and the line numbers that could not be converted (lines of one file)."""
    report = convert_logs((("", n, text) for n, text in enumerate(lines, start=1)), **kwargs)
    return report.records, [number for _, number, _ in report.skipped]


def open_text(path: str) -> TextIO:
    return gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8")


def log_files(path: str) -> list[str]:
    """The file itself, or a folder's log files in name order (Bedrock's S3 layout nests them by date)."""
    if not os.path.isdir(path):
        return [path]
    found = sorted(os.path.join(root, name) for root, _, names in os.walk(path) for name in names
                   if name.endswith(LOG_SUFFIXES))
    if not found:
        raise ValueError(f"{path}: no log files ({', '.join(LOG_SUFFIXES)}) in this folder")
    return found


def read_log_lines(path: str) -> Iterator[tuple[str, int, str]]:
    for file in log_files(path):
        with open_text(file) as f:
            name = os.path.relpath(file, path) if file != path else os.path.basename(file)
            for number, text in enumerate(f, start=1):
                yield name, number, text


def convert_path(path: str, *, selection: Selection = Selection(),
                 response_as_reference: bool = False) -> tuple[ConvertReport, str]:
    """Convert a log file or folder, or a table; returns the report and what its items are called."""
    if not is_table(path):
        return convert_logs(read_log_lines(path), selection=selection,
                            response_as_reference=response_as_reference), "line"
    if selection.models or selection.since or selection.until:
        raise ValueError("--model, --since and --until select logged calls; a table has no model or time "
                         "(select rows by a column with --where KEY=VALUE)")
    return convert_items(read_table_rows(path), row_call, selection=selection), "row"
