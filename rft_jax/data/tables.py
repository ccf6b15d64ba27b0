"""Researchers' tables -> LoggedCall: Parquet files and Hugging Face `datasets` folders.

A `datasets` folder is what `Dataset.save_to_disk` writes: `dataset_info.json`, `state.json`
(which names the shards) and `data-*.arrow` shards in Arrow IPC stream format; it is read with
pyarrow alone, so the `datasets` library is not needed. Columns map as follows, verl's first:
  prompt (a list of chat messages, or a string)  -> messages
  messages                                       -> messages
  question [+ answer]                            -> one user message [+ reference_answer]
  reward_model.ground_truth                      -> reference_answer (its other keys stay as metadata)
  reference_answer                               -> reference_answer
  extra_info (a dict)                            -> metadata fields
  id                                             -> id
  every other column (data_source, ability, ...) -> metadata
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
from collections.abc import Iterator
from typing import Any

from rft_jax.data.chat_text import UnusableRecord, prompt_turns
from rft_jax.data.logged_call import LoggedCall

TABLE_SUFFIXES = (".parquet", ".arrow")
DATASET_FILES = ("state.json", "dataset_info.json")


def is_table(path: str) -> bool:
    if os.path.isdir(path):
        names = os.listdir(path)
        return any(name in names for name in (*DATASET_FILES, "dataset_dict.json")) or any(
            name.endswith(".parquet") for name in names)
    return path.endswith(TABLE_SUFFIXES)


def table_files(path: str) -> list[str]:
    """A file itself; a `datasets` folder's shards in the order state.json lists them; or a folder's Parquet files."""
    if not os.path.isdir(path):
        return [path]
    if os.path.exists(os.path.join(path, "dataset_dict.json")):
        with open(os.path.join(path, "dataset_dict.json"), encoding="utf-8") as f:
            splits = json.load(f).get("splits", [])
        raise ValueError(f"{path} holds several splits ({', '.join(splits)}): convert one split's folder, "
                         f"e.g. {os.path.join(path, splits[0] if splits else 'train')}")
    state = os.path.join(path, "state.json")
    if os.path.exists(state):
        with open(state, encoding="utf-8") as f:
            names = [shard["filename"] for shard in json.load(f).get("_data_files", [])]
    else:
        names = sorted(name for name in os.listdir(path) if name.endswith(".arrow") and name.startswith("data-"))
        names = names or sorted(name for name in os.listdir(path) if name.endswith(".parquet"))
    if not names:
        raise ValueError(f"{path}: no data-*.arrow or .parquet files in this folder")
    return [os.path.join(path, name) for name in names]


def file_rows(path: str) -> Iterator[dict]:
    """The rows of one Parquet or Arrow file as Python dicts, a batch at a time."""
    import pyarrow as pa  # lazy: only table conversions pay for pyarrow's import
    import pyarrow.parquet as pq

    if path.endswith(".parquet"):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            yield from batch.to_pylist()
        return
    with pa.memory_map(path) as source:
        try:
            batches = iter(pa.ipc.open_stream(source))  # what save_to_disk writes
        except pa.ArrowInvalid:
            source.seek(0)
            batches = iter(pa.ipc.open_file(source).read_all().to_batches())
        for batch in batches:
            yield from batch.to_pylist()


def read_table_rows(path: str) -> Iterator[tuple[str, int, dict]]:
    """(file name, row number from 1, row) over every file of the table."""
    for file in table_files(path):
        for number, row in enumerate(file_rows(file), start=1):
            yield os.path.basename(file), number, row


def json_value(value: Any) -> Any:
    """Arrow values that JSON has no form for (dates, decimals, bytes) as JSON ones."""
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def row_prompt(row: dict) -> tuple[Any, Any]:
    """(messages, reference from a question/answer pair); takes the columns it uses out of `row`."""
    if row.get("prompt") is not None:
        prompt = row.pop("prompt")
        return ([{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt), None
    if row.get("messages") is not None:
        return row.pop("messages"), None
    if row.get("question") is not None:
        return [{"role": "user", "content": row.pop("question")}], row.pop("answer", None)
    columns = ", ".join(k for k, v in row.items() if v is not None)
    raise UnusableRecord(f"no prompt, messages or question column with a value (has: {columns})")


def row_call(row: dict) -> LoggedCall:
    row = dict(row)
    messages, reference = row_prompt(row)
    if isinstance(row.get("reward_model"), dict):
        reward_model = row.pop("reward_model")
        if reward_model.get("ground_truth") is not None:
            reference = reward_model["ground_truth"]
        rest = {k: v for k, v in reward_model.items() if k != "ground_truth" and v is not None}
        if rest:
            row["reward_model"] = rest  # e.g. verl's style: "rule"
    column_reference = row.pop("reference_answer", None)
    reference = reference if reference is not None else column_reference
    tools = row.pop("tools", None)
    extra = row.pop("extra_info", None)
    metadata = {k: json_value(v) for k, v in row.items() if v is not None}
    if isinstance(extra, dict):  # a column of the same name wins over an extra_info field
        metadata.update({k: json_value(v) for k, v in extra.items() if v is not None and k not in metadata})
    return LoggedCall(messages=prompt_turns(messages), tools=json_value(tools) if isinstance(tools, list) else None,
                      reference=json_value(reference), example_id=metadata.pop("id", None), metadata=metadata)
