"""`text_similarity`: fuzzy ratio, ROUGE-L F1, or sentence BLEU against a reference text.

Implemented here (stdlib) rather than pulled from NLP packages: each is a few lines
and the graders must be cheap to import.
"""

from __future__ import annotations

import collections
import difflib
import math
import re

from rft_jax.data.example import Example

_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def fuzzy_ratio(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def lcs_length(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(candidate: str, reference: str) -> float:
    c, r = tokens(candidate), tokens(reference)
    lcs = lcs_length(c, r)
    if not lcs:
        return 0.0
    precision, recall = lcs / len(c), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def bleu(candidate: str, reference: str, max_n: int = 4) -> float:
    """Sentence BLEU with add-one smoothing for n > 1 (Lin & Och 2004) and the brevity penalty."""
    c, r = tokens(candidate), tokens(reference)
    if not c or not r:
        return 0.0
    log_precisions = []
    for n in range(1, max_n + 1):
        cand = collections.Counter(tuple(c[i:i + n]) for i in range(len(c) - n + 1))
        ref = collections.Counter(tuple(r[i:i + n]) for i in range(len(r) - n + 1))
        overlap, total = sum((cand & ref).values()), max(sum(cand.values()), 0)
        smooth = 1 if n > 1 else 0
        if overlap + smooth == 0 or total + smooth == 0:
            return 0.0
        log_precisions.append(math.log((overlap + smooth) / (total + smooth)))
    brevity = 1.0 if len(c) > len(r) else math.exp(1 - len(r) / len(c))
    return brevity * math.exp(sum(log_precisions) / max_n)


METRICS = {"fuzzy": fuzzy_ratio, "rouge_l": rouge_l, "bleu": bleu}


def text_similarity(example: Example, completion: str, *, metric: str = "fuzzy",
                    pass_threshold: float | None = None) -> float:
    """Similarity in [0, 1]; with `pass_threshold`, 1.0 at or above it and 0.0 below."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {sorted(METRICS)}")
    value = METRICS[metric](completion.strip(), str(example.reference_answer).strip())
    return value if pass_threshold is None else float(value >= pass_threshold)
