"""The numbers of a comparison: each arm's final metrics (mean ± 95% CI over seeds) and paired tests on the
held-out items against a baseline arm.

One document (`compare`) is written as results.json, flattened one row an arm to results.csv (`csv_rows`),
and drawn as the page's tables, so the three never disagree.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from rft_jax.compare.runs import IGNORED, IGNORED_PREFIXES, Arm, CompareError, Run, read_json
from rft_jax.compare.stats import mcnemar_exact, mean_ci, paired_bootstrap
from rft_jax.evaluation.report import EVAL_METRIC_ORDER

# A held-out item passes when its reward reaches 1: pass@1's own definition (rft_jax/evaluation/evaluate.py).
PASS_THRESHOLD = 1.0
# Below this many shared items a bootstrap sees too few distinct resamples and its interval and p-value come
# out too narrow and too small (with 3 items of equal difference, p = 1/(R+1)): the page says so.
MIN_BOOTSTRAP_ITEMS = 20
# eval_seconds says how long an evaluation took, not how well the policy did: left out of the table.
_TIMING_SUFFIX = "_seconds"


class MissingMetricError(CompareError):
    """A metric asked for (--metric) that some runs did not record."""


def _eval_doc(run: Run, eval_name: str) -> dict[str, Any]:
    path = run.path / f"eval_{eval_name}.json"
    if not path.is_file():
        return {}
    doc = read_json(path)
    return doc if isinstance(doc, dict) else {}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def final_metrics(run: Run, eval_name: str) -> dict[str, float]:
    """The run's scalar metrics of evaluation `eval_name`: results.json's entry, else eval_<name>.json's."""
    metrics = run.results.get(eval_name)
    if not isinstance(metrics, dict):
        metrics = _eval_doc(run, eval_name).get("metrics") or {}
    return {k: float(v) for k, v in metrics.items() if _is_number(v) and not k.endswith(_TIMING_SUFFIX)}


def item_scores(run: Run, eval_name: str) -> dict[str, float]:
    """Example id -> main reward, from eval_<name>.json's samples (run_eval keeps one per held-out example)."""
    scores = {}
    for sample in _eval_doc(run, eval_name).get("samples") or []:
        if isinstance(sample, dict) and sample.get("id") is not None and _is_number(sample.get("reward")):
            if math.isfinite(sample["reward"]):
                scores[str(sample["id"])] = float(sample["reward"])
    return scores


def choose_metrics(finals: dict[Path, dict[str, float]], requested: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(metrics for the table, notes). Asked-for metrics must be in every run; by default, every metric that
    is, with a note for each one only some runs have (a table of means over different runs would mislead)."""
    present = [set(m) for m in finals.values()]
    common = set.intersection(*present) if present else set()
    if requested:
        for metric in requested:
            lacking = [p.name for p, m in finals.items() if metric not in m]
            if lacking:
                raise MissingMetricError(f"metric {metric!r} is missing from {len(lacking)} of {len(finals)} runs "
                                         f"({', '.join(lacking)}); metrics every run has: {', '.join(sorted(common)) or 'none'}")
        return list(requested), []
    ordered = [m for m in EVAL_METRIC_ORDER if m in common] + sorted(common - set(EVAL_METRIC_ORDER))
    notes = []
    for metric in sorted(set().union(*present) - common) if present else []:
        lacking = [p.name for p, m in finals.items() if metric not in m]
        notes.append(f"{metric}: left out of the table, missing from {len(lacking)} of {len(finals)} runs ({', '.join(lacking)})")
    return ordered, notes


def arm_row(arm: Arm, metrics: list[str], finals: dict[Path, dict[str, float]]) -> dict[str, Any]:
    """One arm's table row: its seeds and runs, what sets it apart, and each metric's mean ± CI half-width."""
    cells = {}
    for metric in metrics:
        values = [finals[r.path][metric] for r in arm.runs]
        ci = mean_ci(values)
        cells[metric] = {"mean": ci.mean, "ci95": ci.half_width, "n": ci.n, "values": values}
    return {"arm": arm.name, "n_seeds": len(arm.runs), "seeds": arm.seeds, "runs": [str(r.path) for r in arm.runs],
            "fields": arm.fields, "metrics": cells}


def pooled_items(arm: Arm, eval_name: str) -> dict[str, np.ndarray]:
    """Example id -> the arm's rewards on it, one per seed, for the examples every seed of the arm scored."""
    per_run = [item_scores(r, eval_name) for r in arm.runs]
    shared = set.intersection(*(set(s) for s in per_run)) if per_run else set()
    return {i: np.array([s[i] for s in per_run]) for i in sorted(shared)}


def _why_no_items(arm: Arm, items: dict, eval_name: str) -> str | None:
    if items:
        return None
    if not any(item_scores(r, eval_name) for r in arm.runs):
        return f"{arm.name}: no eval_{eval_name}.json with per-example ids and rewards"
    return f"{arm.name}: its seeds scored no held-out example in common"


def paired_row(baseline: Arm, arm: Arm, eval_name: str, *, resamples: int, seed: int) -> dict[str, Any]:
    """Paired tests of `arm` against `baseline` on the held-out examples both scored, matched by id.

    Seeds are pooled per item before testing: an item's score is its mean reward over the arm's seeds, and
    it passes for McNemar when more than half of the arm's seeds passed it. So each item counts once, and
    the tests ask whether the arm does better on the same problems, not on more runs.
    """
    base_items, arm_items = pooled_items(baseline, eval_name), pooled_items(arm, eval_name)
    row: dict[str, Any] = {"arm": arm.name, "baseline": baseline.name}
    ids = [i for i in base_items if i in arm_items]
    if not ids:
        why = _why_no_items(baseline, base_items, eval_name) or _why_no_items(arm, arm_items, eval_name)
        return row | {"items": 0, "note": why or f"no held-out example id appears in both {baseline.name} and {arm.name}"}
    base_reward = np.array([base_items[i].mean() for i in ids])
    arm_reward = np.array([arm_items[i].mean() for i in ids])
    base_pass = np.array([(base_items[i] >= PASS_THRESHOLD).mean() for i in ids])
    arm_pass = np.array([(arm_items[i] >= PASS_THRESHOLD).mean() for i in ids])
    reward = paired_bootstrap(base_reward, arm_reward, resamples=resamples, seed=seed)
    passed = paired_bootstrap(base_pass, arm_pass, resamples=resamples, seed=seed)
    mcnemar = mcnemar_exact(base_pass > 0.5, arm_pass > 0.5)
    return row | {
        "items": len(ids),
        "reward": {"baseline": float(base_reward.mean()), "arm": float(arm_reward.mean()), **_bootstrap_fields(reward)},
        "pass@1": {"baseline": float(base_pass.mean()), "arm": float(arm_pass.mean()), **_bootstrap_fields(passed),
                   "mcnemar_p": mcnemar.p_value, "only_baseline": mcnemar.only_baseline, "only_arm": mcnemar.only_arm},
        "note": None if len(ids) >= MIN_BOOTSTRAP_ITEMS else
        f"{arm.name}: only {len(ids)} shared items, so the bootstrap CI and p-value are too optimistic "
        f"(below {MIN_BOOTSTRAP_ITEMS}); McNemar stays exact",
    }


def _bootstrap_fields(result) -> dict[str, float]:
    return {"difference": result.difference, "ci_low": result.ci_low, "ci_high": result.ci_high,
            "bootstrap_p": result.p_value}


def _notes(arms: list[Arm]) -> list[str]:
    single = [a.name for a in arms if len(a.runs) == 1]
    notes = [f"one seed, so no confidence interval over seeds (run more seeds for one): {', '.join(single)}"] if single else []
    for arm in arms:
        seeds = [s for s in arm.seeds if s is not None]
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        if repeated:
            notes.append(f"{arm.name}: seed {', '.join(map(str, repeated))} appears more than once, so those runs "
                         "are not independent draws and the interval is too narrow")
        notes += [f"{r.name}: no config.json, so it is an arm of its own" for r in arm.runs if not r.config]
    if len(arms) == 1:
        notes.append("only one arm: no paired tests (compare runs whose configs differ in more than the seed)")
    return notes


def compare(arms: list[Arm], baseline: Arm, *, eval_name: str = "final", metrics: tuple[str, ...] = (),
            resamples: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """The comparison document: results.json as written."""
    finals = {r.path: final_metrics(r, eval_name) for a in arms for r in a.runs}
    chosen, notes = choose_metrics(finals, metrics)
    if not any(finals.values()):
        notes.insert(0, f"no run has final metrics for {eval_name!r} (results.json or eval_{eval_name}.json)")
    paired = [paired_row(baseline, a, eval_name, resamples=resamples, seed=seed) for a in arms if a is not baseline]
    notes += [f"paired tests vs {baseline.name}: {p['note']}" for p in paired if p["note"]]
    return {
        "eval": eval_name, "baseline": baseline.name, "metrics": chosen,
        "arms": [arm_row(a, chosen, finals) for a in arms], "paired": paired, "notes": _notes(arms) + notes,
        "settings": {"resamples": resamples, "seed": seed, "pass_threshold": PASS_THRESHOLD, "ci": 0.95,
                     "ignored_config_fields": [*IGNORED, *(f"{p}*" for p in IGNORED_PREFIXES)]},
    }


_PAIRED_COLUMNS = (("reward", ("difference", "ci_low", "ci_high", "bootstrap_p")),
                   ("pass@1", ("difference", "ci_low", "ci_high", "bootstrap_p", "mcnemar_p", "only_baseline", "only_arm")))


def csv_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row an arm: seeds, each metric's mean and CI half-width, and its paired tests vs the baseline
    (empty for the baseline itself, and for an arm without shared items)."""
    paired = {p["arm"]: p for p in doc["paired"]}
    rows = []
    for arm in doc["arms"]:
        row: dict[str, Any] = {"arm": arm["arm"], "n_seeds": arm["n_seeds"],
                               "seeds": " ".join("" if s is None else str(s) for s in arm["seeds"])}
        for metric, cell in arm["metrics"].items():
            row[f"{metric} mean"], row[f"{metric} ci95"] = cell["mean"], cell["ci95"]
        test = paired.get(arm["arm"], {})
        row["items compared"] = test.get("items")
        for metric, fields in _PAIRED_COLUMNS:
            for name in fields:
                row[f"{metric} {name}"] = test.get(metric, {}).get(name)
        rows.append(row)
    return rows
