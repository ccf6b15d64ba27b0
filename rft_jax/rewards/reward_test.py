"""Check a reward before training: does it score reference answers at the top and bad ones lower?

A reward that cannot tell good from bad gives GRPO zero advantage everywhere (or
worse, rewards the wrong thing), and that is much cheaper to find here than after
a training run.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from rft_jax.data.example import Example
from rft_jax.rewards.result import RewardResult

GENERIC_BAD = {"empty": "", "refusal": "I don't know."}


@dataclasses.dataclass(frozen=True)
class RewardReport:
    good: list[RewardResult]
    bad: dict[str, list[RewardResult]]  # kind -> results, one per example (None-free)
    separation: float  # share of examples whose reference scores above every bad completion
    warnings: list[str]

    def ok(self) -> bool:
        return not self.warnings


def bad_completions(examples: list[Example], render, extra: dict[str, dict[str, str]] | None = None
                    ) -> dict[str, list[str | None]]:
    """Kinds of known-bad completions per example: generic ones, another example's reference
    (a well-formed wrong answer), and user-given ones (kind -> {example id or "*": text})."""
    kinds: dict[str, list[str | None]] = {k: [v] * len(examples) for k, v in GENERIC_BAD.items()}
    if len(examples) > 1:
        shifted = [render(examples[(i + 1) % len(examples)]) for i in range(len(examples))]
        own = [render(e) for e in examples]
        kinds["other_reference"] = [s if s != o else None for s, o in zip(shifted, own)]
    for kind, by_id in (extra or {}).items():
        kinds[kind] = [by_id.get(e.id, by_id.get("*")) for e in examples]
    return kinds


def read_bad_file(path: str) -> dict[str, dict[str, str]]:
    """JSONL lines {"completion": str, "id"?: example id, "kind"?: label}; no id = every example."""
    kinds: dict[str, dict[str, str]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                kinds.setdefault(record.get("kind", "file"), {})[str(record.get("id", "*"))] = record["completion"]
    return kinds


def run_reward_test(scorer, examples: list[Example], *, bad_file: str | None = None) -> RewardReport:
    good_texts = [scorer.render_reference(e) for e in examples]
    good = scorer.score_batch(examples, good_texts)
    kinds = bad_completions(examples, scorer.render_reference, read_bad_file(bad_file) if bad_file else None)
    bad: dict[str, list[RewardResult]] = {}
    bad_index: dict[str, list[int]] = {}
    for kind, texts in kinds.items():
        idx = [i for i, t in enumerate(texts) if t is not None]
        bad[kind] = scorer.score_batch([examples[i] for i in idx], [texts[i] for i in idx])
        bad_index[kind] = idx
    best_bad = np.full(len(examples), -np.inf)
    for kind, results in bad.items():
        for i, r in zip(bad_index[kind], results):
            best_bad[i] = max(best_bad[i], r.score)
    good_scores = np.array([r.score for r in good])
    separation = float(np.mean(good_scores > best_bad)) if len(examples) else 0.0
    return RewardReport(good, bad, separation, diagnose(good, bad, separation))


def diagnose(good: list[RewardResult], bad: dict[str, list[RewardResult]], separation: float) -> list[str]:
    warnings = []
    all_results = good + [r for rs in bad.values() for r in rs]
    errors = [r.error for r in all_results if r.error]
    if errors:
        warnings.append(f"{len(errors)} of {len(all_results)} scorings errored, e.g. {errors[0]}")
    scores = np.array([r.score for r in all_results])
    if scores.size and np.ptp(scores) == 0:
        warnings.append(f"constant reward: every completion scored {scores[0]:g}; GRPO gets no signal")
    good_scores = np.array([r.score for r in good])
    if good_scores.size and scores.size and good_scores.min() < scores.max():
        below = int(np.sum(good_scores < scores.max()))
        warnings.append(f"{below} reference answers score below the top score {scores.max():g}; "
                        "check the reference rendering or the reward")
    if separation < 0.9:
        warnings.append(f"reference beats every bad completion on only {separation:.0%} of examples")
    return warnings


def stats(results: list[RewardResult]) -> dict:
    scores = np.array([r.score for r in results]) if results else np.zeros(0)
    out = {"n": len(results), "errors": sum(r.error is not None for r in results)}
    if scores.size:
        out.update(mean=float(scores.mean()), std=float(scores.std()), min=float(scores.min()),
                   max=float(scores.max()), histogram=histogram(scores))
    names = sorted({k for r in results for k in (*r.components, *r.metrics)})
    out["components"] = {n: float(np.mean([{**r.components, **r.metrics}.get(n, np.nan) for r in results]))
                         for n in names}
    return out


def histogram(scores: np.ndarray, bins: int = 5) -> list[tuple[float, float, int]]:
    lo, hi = float(scores.min()), float(scores.max())
    if lo == hi:
        return [(lo, hi, int(scores.size))]
    counts, edges = np.histogram(scores, bins=bins, range=(lo, hi))
    return [(float(a), float(b), int(c)) for a, b, c in zip(edges[:-1], edges[1:], counts)]


def format_report(report: RewardReport) -> str:
    lines = []
    for label, results in [("reference", report.good)] + [(f"bad:{k}", v) for k, v in report.bad.items()]:
        s = stats(results)
        if not s["n"]:
            continue
        lines.append(f"{label:<22} n={s['n']:<5} mean={s['mean']:.3f} std={s['std']:.3f} "
                     f"min={s['min']:.3f} max={s['max']:.3f} errors={s['errors']}")
        lines += [f"    {name}: mean {value:.3f}" for name, value in s["components"].items()]
    lines.append(f"separation: reference beats every bad completion on {report.separation:.0%} of examples")
    lines += [f"WARNING: {w}" for w in report.warnings] or ["OK: the reward separates reference from bad answers"]
    return "\n".join(lines)
