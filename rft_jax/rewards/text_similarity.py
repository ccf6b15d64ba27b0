"""`text_similarity`: how close a completion is to a reference text, in [0, 1].

Metrics (the names OpenAI's text_similarity grader uses, plus `fuzzy`, an alias of `fuzzy_match`):
  fuzzy_match   normalised Indel similarity of the characters, 2 * LCS / (len(a) + len(b)): rapidfuzz's `fuzz.ratio`
  bleu          sentence BLEU-4 with add-one smoothing for n > 1 (Lin & Och 2004) and the brevity penalty
  gleu          Google BLEU (Wu et al. 2016): min(n-gram precision, n-gram recall) over n = 1..4
  meteor        METEOR's exact-match stage (Banerjee & Lavie 2005, nltk's alpha 0.9, beta 3, gamma 0.5); nltk's
                stem and WordNet-synonym stages are left out, so paraphrases score lower than under nltk
  rouge_1..5    ROUGE-N F1; rouge_l: ROUGE-L F1 (LCS of tokens), tokenised like the rouge-score package
                (lower-cased alphanumeric runs, no stemming)
Implemented here (stdlib) rather than pulled from NLP packages: each is a few lines
and the graders must be cheap to import.
"""

from __future__ import annotations

import collections
import math
import re

from rft_jax.data.example import Example

_TOKEN = re.compile(r"\w+|[^\w\s]")
_ROUGE_TOKEN = re.compile(r"[^\W_]+")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def rouge_tokens(text: str) -> list[str]:
    """Words without punctuation, as the rouge-score package splits them (it keeps only [a-z0-9] runs)."""
    return _ROUGE_TOKEN.findall(text.lower())


def char_lcs_length(a: str, b: str) -> int:
    """Longest common subsequence of two strings, bit-parallel (Hyyrö 2004): one big-int step per char of b."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, ch in enumerate(a):
        masks[ch] = masks.get(ch, 0) | 1 << i
    full = (1 << len(a)) - 1
    v = full
    for ch in b:
        u = v & masks.get(ch, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


def fuzzy_ratio(a: str, b: str) -> float:
    if not a and not b:
        return 1.0
    return 2 * char_lcs_length(a, b) / (len(a) + len(b))


def lcs_length(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def f1(overlap: int, n_candidate: int, n_reference: int) -> float:
    if not overlap:
        return 0.0
    precision, recall = overlap / n_candidate, overlap / n_reference
    return 2 * precision * recall / (precision + recall)


def ngrams(words: list[str], n: int) -> collections.Counter:
    return collections.Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def rouge_n(candidate: str, reference: str, n: int) -> float:
    c, r = ngrams(rouge_tokens(candidate), n), ngrams(rouge_tokens(reference), n)
    return f1(sum((c & r).values()), sum(c.values()), sum(r.values()))


def rouge_l(candidate: str, reference: str) -> float:
    c, r = rouge_tokens(candidate), rouge_tokens(reference)
    return f1(lcs_length(c, r), len(c), len(r))


def bleu(candidate: str, reference: str, max_n: int = 4) -> float:
    """Sentence BLEU with add-one smoothing for n > 1 (Lin & Och 2004) and the brevity penalty."""
    c, r = tokens(candidate), tokens(reference)
    if not c or not r:
        return 0.0
    log_precisions = []
    for n in range(1, max_n + 1):
        cand, ref = ngrams(c, n), ngrams(r, n)
        overlap, total = sum((cand & ref).values()), max(sum(cand.values()), 0)
        smooth = 1 if n > 1 else 0
        if overlap + smooth == 0 or total + smooth == 0:
            return 0.0
        log_precisions.append(math.log((overlap + smooth) / (total + smooth)))
    brevity = 1.0 if len(c) > len(r) else math.exp(1 - len(r) / len(c))
    return brevity * math.exp(sum(log_precisions) / max_n)


def gleu(candidate: str, reference: str, max_n: int = 4) -> float:
    """Google BLEU: every n-gram (n = 1..max_n) of both texts pooled; min(precision, recall) of the matches.
    Unlike BLEU it is symmetric in its failure modes and needs no smoothing for short sentences."""
    c, r = tokens(candidate), tokens(reference)
    cand = sum((ngrams(c, n) for n in range(1, max_n + 1)), collections.Counter())
    ref = sum((ngrams(r, n) for n in range(1, max_n + 1)), collections.Counter())
    total_c, total_r = sum(cand.values()), sum(ref.values())
    if not total_c or not total_r:
        return 0.0
    overlap = sum((cand & ref).values())
    return min(overlap / total_c, overlap / total_r)


def exact_alignment(hypothesis: list[str], reference: list[str]) -> list[tuple[int, int]]:
    """METEOR's exact stage: pair equal words, scanning both from the end as nltk does; sorted by position."""
    free = list(range(len(reference)))
    pairs = []
    for i in range(len(hypothesis) - 1, -1, -1):
        for k in range(len(free) - 1, -1, -1):
            if hypothesis[i] == reference[free[k]]:
                pairs.append((i, free.pop(k)))
                break
    return sorted(pairs)


def meteor(candidate: str, reference: str, alpha: float = 0.9, beta: float = 3.0, gamma: float = 0.5) -> float:
    """F-mean weighted towards recall, times a penalty for matches split into many chunks (word order)."""
    c, r = tokens(candidate), tokens(reference)
    pairs = exact_alignment(c, r)
    if not pairs:
        return 0.0
    chunks = 1 + sum(1 for (i0, j0), (i1, j1) in zip(pairs, pairs[1:]) if not (i1 == i0 + 1 and j1 == j0 + 1))
    precision, recall = len(pairs) / len(c), len(pairs) / len(r)
    fmean = precision * recall / (alpha * precision + (1 - alpha) * recall)
    return fmean * (1 - gamma * (chunks / len(pairs)) ** beta)


METRICS = {"fuzzy": fuzzy_ratio, "fuzzy_match": fuzzy_ratio, "bleu": bleu, "gleu": gleu, "meteor": meteor,
           **{f"rouge_{n}": (lambda a, b, n=n: rouge_n(a, b, n)) for n in range(1, 6)}, "rouge_l": rouge_l}


def similarity(metric: str, candidate: str, reference: str) -> float:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {sorted(METRICS)}")
    return METRICS[metric](candidate, reference)


def text_similarity(example: Example, completion: str, *, metric: str = "fuzzy",
                    pass_threshold: float | None = None) -> float:
    """Similarity in [0, 1]; with `pass_threshold`, 1.0 at or above it and 0.0 below.

    (OpenAI's text_similarity grader keeps the similarity as the score and uses pass_threshold only to mark
    a pass; give the grader in OpenAI's JSON form, with a `type` key, for those semantics.)"""
    value = similarity(metric, completion.strip(), str(example.reference_answer).strip())
    return value if pass_threshold is None else float(value >= pass_threshold)
