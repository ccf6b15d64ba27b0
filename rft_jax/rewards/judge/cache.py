"""Judge replies cached by a hash of (judge, rubric, prompt, completion).

GRPO samples the same short answer many times ("42", a refusal), and an eval
re-scores the same completions; a judge call costs seconds or money, so each
distinct judge prompt is asked once. The key hashes the judge's identity
(backend, model, sampling) and the full judge messages, which contain the
rubric, the example's prompt, its reference and the completion. Replies are
cached raw, so a changed parse rule re-reads them without re-asking.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import threading


def cache_key(judge_identity: dict, messages: list[dict], n: int) -> str:
    blob = json.dumps({"judge": judge_identity, "messages": messages, "n": n}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class JudgeCache:
    """An LRU of key -> list of reply texts, optionally persisted as JSONL lines {"key", "replies"}."""

    def __init__(self, path: str | None = None, max_entries: int = 200_000):
        self.path, self.max_entries = path, max_entries
        self.entries: collections.OrderedDict[str, list[str]] = collections.OrderedDict()
        self.lock = threading.Lock()
        self.hits = self.misses = 0
        if path and os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        record = json.loads(line)
                        self.entries[record["key"]] = record["replies"]

    def get(self, key: str) -> list[str] | None:
        with self.lock:
            replies = self.entries.get(key)
            if replies is None:
                self.misses += 1
                return None
            self.hits += 1
            self.entries.move_to_end(key)
            return replies

    def put(self, key: str, replies: list[str]) -> None:
        with self.lock:
            self.entries[key] = list(replies)
            self.entries.move_to_end(key)
            while len(self.entries) > self.max_entries:
                self.entries.popitem(last=False)
            if self.path:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"key": key, "replies": replies}, ensure_ascii=False) + "\n")
