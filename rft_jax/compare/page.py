"""The comparison page (compare.html): overlaid training curves of every arm, the results table, and the
paired tests against the baseline arm.

Charts are drawn with the report's stack (rft_jax/monitoring/plots.py: `Figure`, never pyplot) and embedded
as base64 PNGs, and the CSS is the run report's, so the page is one self-contained file that looks like
`rft-jax report`'s.
"""

from __future__ import annotations

import base64
import html
import json
from typing import Any, NamedTuple

import numpy as np
from matplotlib.figure import Figure

from rft_jax.compare.runs import Arm
from rft_jax.evaluation.report import CSS, format_value
from rft_jax.monitoring import names
from rft_jax.monitoring.plots import SPARSE_PREFIXES, figure_png, moving_average


class Curve(NamedTuple):
    """One overlaid chart: the first of `metrics` that any run logged is drawn for every run."""

    key: str
    title: str
    metrics: tuple[str, ...]
    ylabel: str


CURVES: tuple[Curve, ...] = (
    Curve("reward", "Train reward", (names.REWARD_MEAN,), "reward"),
    Curve("validation", "Validation reward", (names.VAL_REWARD_MEAN, names.VAL_PASS_AT_1), "reward"),
    Curve("entropy", "Policy entropy", (names.ENTROPY,), "nats/token"),
    Curve("length", "Response length", (names.RESPONSE_LENGTH_MEAN,), "tokens"),
    # ref_kl is measured even when beta = 0; kl_loss only exists when the KL term is on.
    Curve("kl", "KL to the reference", (names.REF_KL, names.KL_LOSS), "nats/token"),
)
_CSS_EXTRA = """
table.results td:first-child, table.results th:first-child, table.arms td, table.arms th { text-align: left; }
.notes { background: #fff8e6; border-left: 4px solid #e0a800; padding: 0.4em 1em; }
td.note { text-align: left; color: #777; }
.sig { font-weight: 600; color: #2a7d2a; } .ci { color: #777; font-size: 0.85em; }
"""


def curve_metric(arms: list[Arm], curve: Curve) -> str | None:
    logged = {m for a in arms for r in a.runs for m in r.history.names() if r.history.series(m)[1].size}
    return next((m for m in curve.metrics if m in logged), None)


def seed_mean(series: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The mean over seeds at the steps every seed logged (a mean over a changing set of seeds would jump)."""
    unique = [np.unique(steps, return_index=True) for steps, _ in series]  # sorted; a repeated step's first value
    common = unique[0][0]
    for steps, _ in unique[1:]:
        common = np.intersect1d(common, steps)
    values = [v[first][np.searchsorted(steps, common)] for (steps, first), (_, v) in zip(unique, series)]
    return common, np.mean(values, axis=0)


def plot_curve(arms: list[Arm], curve: Curve, metric: str) -> Figure:
    """Each seed a thin faint line in its arm's colour, the arm's seed mean a thick one (smoothed when dense)."""
    fig = Figure(figsize=(6.4, 3.4 + 0.16 * len(arms)), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    sparse = metric.startswith(SPARSE_PREFIXES)
    for i, arm in enumerate(arms):
        color = f"C{i % 10}"
        series = [s for s in (r.history.series(metric) for r in arm.runs) if s[1].size]
        for steps, values in series:
            ax.plot(steps, values, color=color, lw=0.8, alpha=0.3)
        if not series:
            continue
        steps, mean = seed_mean(series)
        if not sparse and mean.size >= 10:
            mean = moving_average(mean, max(3, mean.size // 25))
        ax.plot(steps, mean, "o-" if sparse or mean.size < 10 else "-", color=color, lw=2.0, ms=3,
                label=f"{_clip(arm.name)} (mean of {len(series)})")
    ax.set_title(f"{curve.title} ({metric})", fontsize=11)
    ax.set_xlabel("step")
    ax.set_ylabel(curve.ylabel)
    ax.grid(alpha=0.3)
    fig.legend(fontsize=7, loc="outside lower center")  # below the axes: arm names can be long
    return fig


def _clip(name: str, width: int = 70) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def curve_charts(arms: list[Arm]) -> tuple[list[tuple[str, str, bytes]], list[str]]:
    """(key, title, PNG) per curve some run logged, and a note per curve or run that has none."""
    charts, notes = [], []
    for curve in CURVES:
        metric = curve_metric(arms, curve)
        if metric is None:
            notes.append(f"{curve.title}: no run logged {' or '.join(curve.metrics)}")
            continue
        lacking = [r.name for a in arms for r in a.runs if not r.history.series(metric)[1].size]
        if lacking:
            notes.append(f"{curve.title}: {metric} is missing from {', '.join(lacking)}")
        charts.append((curve.key, curve.title, figure_png(plot_curve(arms, curve, metric))))
    return charts, notes


def _esc(value: object) -> str:
    return html.escape(str(value))


def mean_ci_text(metric: str, cell: dict[str, Any]) -> str:
    text = format_value(metric, cell["mean"])
    if cell["ci95"] is None:  # one seed: the table says why there is no interval rather than leaving a gap
        return f"{text} <span class='ci'>(n = {cell['n']}, no CI)</span>"
    return f"{text} <span class='ci'>± {format_value(metric, cell['ci95'])}</span>"


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _arms_table(doc: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{_esc(a['arm'])}{' (baseline)' if a['arm'] == doc['baseline'] else ''}</td><td>{a['n_seeds']}</td>"
        f"<td>{_esc(', '.join('?' if s is None else str(s) for s in a['seeds']))}</td>"
        f"<td>{'<br>'.join(_esc(f'{k}={_value(v)}') for k, v in a['fields'].items()) or '-'}</td>"
        f"<td>{'<br>'.join(_esc(r) for r in a['runs'])}</td></tr>"
        for a in doc["arms"])
    return f"<table class='arms'><tr><th>arm</th><th>seeds</th><th>seed values</th><th>config</th><th>runs</th></tr>{rows}</table>"


def results_table(doc: dict[str, Any]) -> str:
    """Arms down, final metrics across: mean ± half-width of the 95% CI over seeds."""
    if not doc["metrics"]:
        return f"<p class='muted'>No final metric that every run has for evaluation {_esc(doc['eval'])!r}.</p>"
    head = "".join(f"<th>{_esc(m)}</th>" for m in doc["metrics"])
    rows = "".join(
        f"<tr><td>{_esc(a['arm'])}</td><td>{a['n_seeds']}</td>"
        + "".join(f"<td>{mean_ci_text(m, a['metrics'][m])}</td>" for m in doc["metrics"]) + "</tr>"
        for a in doc["arms"])
    return f"<table class='results'><tr><th>arm</th><th>seeds</th>{head}</tr>{rows}</table>"


def _signed(metric: str, value: float) -> str:
    return f"{100 * value:+.1f} pp" if metric == "pass@1" else f"{value:+.4g}"


def _p_text(p: float) -> str:
    text = f"{p:.3g}" if p >= 1e-4 else "&lt;1e-4"
    return f"<span class='sig'>{text}</span>" if p < 0.05 else text


def paired_table(doc: dict[str, Any]) -> str:
    """Arm minus baseline on the shared held-out items, with the bootstrap CI and both p-values."""
    if not doc["paired"]:
        return "<p class='muted'>Only one arm: nothing to test against.</p>"
    rows = []
    for p in doc["paired"]:
        if not p["items"]:
            rows.append(f"<tr><td>{_esc(p['arm'])}</td><td>0</td><td colspan='5' class='note'>{_esc(p['note'])}</td></tr>")
            continue
        for metric in ("reward", "pass@1"):
            t = p[metric]
            mcnemar = (f"{_p_text(t['mcnemar_p'])} <span class='ci'>({t['only_baseline']} vs {t['only_arm']})</span>"
                       if "mcnemar_p" in t else "-")
            rows.append(
                f"<tr><td>{_esc(p['arm'])}</td><td>{p['items']}</td><td class='metric'>{metric}</td>"
                f"<td>{format_value(metric, t['baseline'])} → {format_value(metric, t['arm'])}</td>"
                f"<td>{_signed(metric, t['difference'])} <span class='ci'>[{_signed(metric, t['ci_low'])}, "
                f"{_signed(metric, t['ci_high'])}]</span></td><td>{_p_text(t['bootstrap_p'])}</td><td>{mcnemar}</td></tr>")
    return ("<table class='results'><tr><th>arm</th><th>items</th><th>score</th><th>baseline → arm</th>"
            "<th>difference [95% CI]</th><th>p (paired bootstrap)</th><th>p (exact McNemar: only baseline vs only arm)</th>"
            f"</tr>{''.join(rows)}</table>")


def _how_to_read(doc: dict[str, Any]) -> str:
    s = doc["settings"]
    return (
        "<ul>"
        f"<li>Runs are one arm when their config.json differ only in {_esc(', '.join(s['ignored_config_fields']))}; "
        "an arm is named by the fields that differ between arms (or by sweep.json).</li>"
        "<li>Results: the mean over an arm's seeds ± the half-width of a 95% Student t interval (n − 1 degrees "
        "of freedom); one seed gives no interval.</li>"
        f"<li>Paired tests: the held-out examples of eval_{_esc(doc['eval'])}.json that every run of both arms "
        "scored, matched by example id. An item's score is its mean reward over the arm's seeds; the paired "
        f"bootstrap ({s['resamples']} resamples of items, seed {s['seed']}) gives the CI of the difference and a "
        f"p-value. pass@1 counts an item passed at reward ≥ {s['pass_threshold']:g}; exact McNemar tests the items "
        "only one arm passed (with several seeds, passed by more than half of them).</li>"
        "<li>The CI over seeds says how much another seed would move a result; the paired tests say how much "
        "another draw of held-out problems would move a difference. p &lt; 0.05 is in green.</li></ul>")


def render_page(doc: dict[str, Any], charts: list[tuple[str, str, bytes]], notes: list[str]) -> str:
    """The whole page; `charts` holds (key, title, PNG bytes), `notes` the warnings shown on top."""
    n_runs = sum(a["n_seeds"] for a in doc["arms"])
    title = f"Comparison: {len(doc['arms'])} arms, {n_runs} runs"
    note_html = ("<div class='notes'><b>Notes</b><ul>" + "".join(f"<li>{_esc(n)}</li>" for n in notes)
                 + "</ul></div>") if notes else ""
    chart_html = "".join(
        f"<figure id='curve-{key}'><img alt='{_esc(t)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'></figure>"
        for key, t, png in charts) or "<p class='muted'>No run logged any of the compared curves.</p>"
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_esc(title)}</title>"
        f"<style>{CSS}{_CSS_EXTRA}</style></head><body><h1>{_esc(title)}</h1>{note_html}"
        f"<h2 id='arms'>Arms</h2>{_arms_table(doc)}"
        f"<h2 id='results'>Results (evaluation {_esc(doc['eval'])!r}, mean ± 95% CI over seeds)</h2>{results_table(doc)}"
        f"<h2 id='paired'>Paired tests vs {_esc(doc['baseline'])}</h2>{paired_table(doc)}"
        f"<h2 id='curves'>Training curves</h2><div class='charts'>{chart_html}</div>"
        f"<h2 id='how'>How to read this page</h2>{_how_to_read(doc)}"
        "<p class='muted'>The same tables: results.csv and results.json beside this page.</p></body></html>")
