"""One self-contained HTML page that tells how a training run went (`rft-jax report RUN_DIR`).

It reads only files in the run directory (metrics.jsonl, alarms.jsonl,
eval_*.json; formats in docs/monitoring.md), so it works on a finished run, a
crashed one, or one still training. Charts are embedded as base64 PNGs, so the
HTML can be mailed or attached to an issue alone; the PNGs are also saved
beside it for slides and reviews.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rft_jax.monitoring import names
from rft_jax.monitoring.history import MetricHistory
from rft_jax.monitoring.jsonl import read_jsonl
from rft_jax.monitoring.plots import PANELS, figure_png, plot_panel
from rft_jax.monitoring.writer import ALARMS_FILE, METRICS_FILE

REPORT_FILE = "report.html"
# Metrics listed first, in this order, in the evaluation table; the rest follow sorted.
EVAL_METRIC_ORDER = ("greedy/pass@1", "pass@1", "reward/mean", "reward/std", "prompts/any_success_frac", "prompts/constant_frac")
_PERCENT_HINTS = ("pass@", "_frac", "_rate", "compliance", "clip_ratio", "errors")


@dataclass(frozen=True)
class EvalResult:
    """One eval_<name>.json file: see docs/monitoring.md for the schema."""

    name: str
    metrics: dict[str, float]
    samples: list[dict[str, Any]] = field(default_factory=list)
    step: int | None = None
    model: str | None = None
    verdict: dict[str, Any] | None = None


def load_eval(path: Path) -> EvalResult:
    data = json.loads(path.read_text(encoding="utf-8"))
    name = data.get("name") or path.stem.removeprefix("eval_")
    metrics = {k: v for k, v in (data.get("metrics") or {}).items() if isinstance(v, (int, float))}
    return EvalResult(name, metrics, list(data.get("samples") or []), data.get("step"), data.get("model"), data.get("verdict"))


def load_evals(run_dir: Path) -> list[EvalResult]:
    """All evaluations of the run: "base" first, then by training step, then by name."""
    evals = [load_eval(p) for p in sorted(run_dir.glob("eval_*.json"))]
    return sorted(evals, key=lambda e: (e.name != "base", e.step if e.step is not None else math.inf, e.name))


def paired_samples(before: EvalResult, after: EvalResult, limit: int) -> list[tuple[dict, dict]]:
    """Samples of the same prompt in two evaluations, matched by `id` when present, else by prompt text."""

    def key(sample: dict) -> str:
        return str(sample.get("id", sample.get("prompt", "")))

    after_by_key = {}
    for sample in after.samples:
        after_by_key.setdefault(key(sample), sample)
    pairs = [(s, after_by_key[key(s)]) for s in before.samples if key(s) in after_by_key]
    return pairs[:limit]


def alarm_spans(history: MetricHistory, events: list[dict]) -> list[dict]:
    """Each alarm that fired: first and last step, steps firing, and its message and fix when logged."""
    by_name = {e.get("name"): e for e in events}
    spans = []
    for metric in sorted(n for n in history.names() if n.startswith(names.ALARM_PREFIX)):
        steps, values = history.series(metric)
        firing = steps[values > 0]
        name = metric[len(names.ALARM_PREFIX) :]
        if firing.size:
            event = by_name.get(name, {})
            spans.append({"name": name, "first": int(firing[0]), "last": int(firing[-1]), "count": int(firing.size),
                          "message": event.get("message", ""), "fix": event.get("fix", "")})
    known = {s["name"] for s in spans}  # events whose flags were not logged (alarm metrics filtered out)
    spans += [{"name": e["name"], "first": e.get("step"), "last": e.get("step"), "count": 1, "message": e.get("message", ""),
               "fix": e.get("fix", "")} for e in events if e.get("name") not in known]
    return sorted(spans, key=lambda s: (s["first"] is None, s["first"]))


def format_value(name: str, value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if any(hint in name for hint in _PERCENT_HINTS):
        return f"{value:.1%}"
    if float(value).is_integer() and abs(value) < 1e9:
        return f"{int(value)}"
    return f"{value:.4g}"


def format_delta(name: str, before: float | None, after: float | None) -> str:
    """Signed change; shares change in percentage points, not percent."""
    if before is None or after is None or not math.isfinite(after - before):
        return "-"
    change = after - before
    if any(hint in name for hint in _PERCENT_HINTS):
        return f"{100 * change:+.1f} pp"
    return f"{change:+.4g}"


def _esc(value: object) -> str:
    return html.escape(str(value))


def _summary_cards(history: MetricHistory) -> list[tuple[str, str]]:
    cards = []
    steps, rewards = history.series(names.REWARD_MEAN)
    if rewards.size:
        cards.append(("steps", str(int(steps[-1]))))
        tail = max(1, rewards.size // 10)
        cards.append(("train reward, first -> last 10%", f"{rewards[:tail].mean():.3g} -> {rewards[-tail:].mean():.3g}"))
    val_steps, val = history.series(names.VAL_REWARD_MEAN)
    if val.size:
        best = int(val.argmax())
        cards.append(("best val reward", f"{val[best]:.3g} at step {int(val_steps[best])}"))
    times = history.series(names.TIMING_STEP)[1]
    if times.size:
        cards.append(("training time", f"{times.sum() / 3600:.2f} h ({times.mean():.1f} s/step)"))
    return cards


def _eval_table(evals: list[EvalResult]) -> str:
    present = {k for e in evals for k in e.metrics}
    keys = [k for k in EVAL_METRIC_ORDER if k in present]
    keys += sorted((k for k in present - set(keys) if re.fullmatch(r"pass@\d+", k)), key=lambda k: int(k[5:]))
    keys += [k for k in names.REASONING if k in present]  # reasoning mode only
    keys += sorted(present - set(keys))
    show_delta = len(evals) >= 2
    head = "".join(f"<th>{_esc(e.name)}{f' (step {e.step})' if e.step is not None else ''}</th>" for e in evals)
    rows = [f"<tr><th>metric</th>{head}{'<th>change</th>' if show_delta else ''}</tr>"]
    for key in keys:
        cells = "".join(f"<td>{format_value(key, e.metrics.get(key))}</td>" for e in evals)
        if show_delta:
            first, last = evals[0].metrics.get(key), evals[-1].metrics.get(key)
            cells += f"<td class='delta'>{format_delta(key, first, last)}</td>"
        rows.append(f"<tr><td class='metric'>{_esc(key)}</td>{cells}</tr>")
    return "<table class='evals'>" + "".join(rows) + "</table>"


def _verdicts(evals: list[EvalResult]) -> str:
    parts = []
    for e in evals:
        if e.verdict:
            reasons = "".join(f"<li>{_esc(r)}</li>" for r in e.verdict.get("reasons", []))
            parts.append(f"<div class='verdict'><b>{_esc(e.name)} verdict: {_esc(e.verdict.get('title', e.verdict.get('label')))}</b>"
                         f"<ul>{reasons}</ul><p>Next step: {_esc(e.verdict.get('next_step', ''))}</p></div>")
    return "".join(parts)


def _completion(sample: dict) -> str:
    """The answer; in reasoning mode its thinking collapsed under it, and a mark when it never closed."""
    answer = f"<pre>{_esc(sample.get('completion', ''))}</pre>"
    if "thinking" not in sample:
        return answer
    tokens = sample.get("think_tokens")
    summary = f"thinking ({tokens} tokens)" if tokens is not None else "thinking"
    mark = ("" if sample.get("well_formed", True) else
            "<p class='malformed'>malformed: the thinking never closed, so there is no answer</p>")
    return (f"{mark}{answer}<details class='thinking'><summary>{summary}</summary>"
            f"<pre>{_esc(sample['thinking'])}</pre></details>")


def _examples(evals: list[EvalResult], limit: int) -> str:
    if len(evals) < 2:
        return "<p class='muted'>Side-by-side examples need two evaluations with samples (e.g. eval_base.json and eval_final.json).</p>"
    before, after = evals[0], evals[-1]
    pairs = paired_samples(before, after, limit)
    if not pairs:
        return f"<p class='muted'>No prompt appears in both {_esc(before.name)} and {_esc(after.name)} samples.</p>"
    blocks = []
    for b, a in pairs:
        blocks.append(
            f"<div class='example'><div class='prompt'><b>Prompt</b><pre>{_esc(b.get('prompt', ''))}</pre></div>"
            f"<div class='pair'><div><b>{_esc(before.name)}</b> <span class='reward'>reward {format_value('', b.get('reward'))}</span>"
            f"{_completion(b)}</div>"
            f"<div><b>{_esc(after.name)}</b> <span class='reward'>reward {format_value('', a.get('reward'))}</span>"
            f"{_completion(a)}</div></div></div>"
        )
    return "".join(blocks)


def _alarm_table(spans: list[dict]) -> str:
    if not spans:
        return "<p class='ok'>No alarms fired.</p>"
    rows = "".join(
        f"<tr><td class='metric'>{_esc(s['name'])}</td><td>{s['first']}</td><td>{s['last']}</td><td>{s['count']}</td>"
        f"<td>{_esc(s['message'])}</td><td>{_esc(s['fix'])}</td></tr>"
        for s in spans
    )
    return ("<table class='alarms'><tr><th>alarm</th><th>first step</th><th>last step</th><th>steps firing</th>"
            f"<th>what it saw</th><th>suggested fix</th></tr>{rows}</table>")


CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 1280px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
.muted { color: #777; } .ok { color: #2a7d2a; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8em; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.6em 1em; background: #fafafa; }
.card .label { font-size: 0.8em; color: #666; } .card .value { font-size: 1.2em; font-weight: 600; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 1em; }
.charts figure { margin: 0; } .charts img { width: 100%; border: 1px solid #eee; }
table { border-collapse: collapse; font-size: 0.9em; } td, th { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: right; vertical-align: top; }
th { background: #f3f3f3; } td.metric { text-align: left; font-family: monospace; } td.delta { font-weight: 600; }
table.alarms td, table.alarms th { text-align: left; } table.alarms { background: #fff8e6; }
.verdict { border-left: 4px solid #4a7bd0; background: #f3f7fd; padding: 0.5em 1em; margin: 1em 0; }
.example { border: 1px solid #ddd; border-radius: 6px; padding: 0.6em; margin: 1em 0; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 0.8em; }
pre { white-space: pre-wrap; word-break: break-word; background: #f7f7f7; padding: 0.5em; margin: 0.3em 0; font-size: 0.85em; max-height: 24em; overflow: auto; }
.reward { color: #666; font-size: 0.85em; }
details.thinking summary { color: #666; font-size: 0.85em; cursor: pointer; } details.thinking pre { background: #fbfbf3; }
.malformed { color: #b03a2e; font-size: 0.85em; font-weight: 600; margin: 0.3em 0; }
"""


def render_html(title: str, cards: list[tuple[str, str]], charts: list[tuple[str, str, bytes]], spans: list[dict],
                evals: list[EvalResult], examples: int) -> str:
    """The report page. `charts` holds (key, title, png bytes)."""
    card_html = "".join(f"<div class='card'><div class='label'>{_esc(k)}</div><div class='value'>{_esc(v)}</div></div>" for k, v in cards)
    chart_html = "".join(
        f"<figure><img alt='{_esc(t)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'></figure>"
        for _, t, png in charts
    ) or "<p class='muted'>No metrics logged (metrics.jsonl missing or empty).</p>"
    eval_html = (_verdicts(evals) + _eval_table(evals)) if evals else "<p class='muted'>No eval_*.json files in the run directory.</p>"
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_esc(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{_esc(title)}</h1><div class='cards'>{card_html}</div>"
        f"<h2 id='alarms'>Alarms</h2>{_alarm_table(spans)}"
        f"<h2 id='curves'>Training curves</h2><div class='charts'>{chart_html}</div>"
        f"<h2 id='evaluation'>Evaluation</h2>{eval_html}"
        f"<h2 id='examples'>Examples</h2>{_examples(evals, examples)}"
        "</body></html>"
    )


def build_report(run_dir: str | Path, out_dir: str | Path | None = None, *, examples: int = 4) -> Path:
    """Write `report.html` and its chart PNGs into `out_dir` (default RUN_DIR/report); returns the HTML path."""
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = run_dir / METRICS_FILE
    history = MetricHistory.from_records(read_jsonl(metrics_path)) if metrics_path.exists() else MetricHistory()
    events = list(read_jsonl(run_dir / ALARMS_FILE)) if (run_dir / ALARMS_FILE).exists() else []
    charts = []
    for panel in PANELS:
        fig = plot_panel(history, panel)
        if fig is not None:
            png = figure_png(fig)
            (out_dir / f"{panel.key}.png").write_bytes(png)
            charts.append((panel.key, panel.title, png))
    page = render_html(f"Training report: {run_dir.resolve().name}", _summary_cards(history), charts,
                       alarm_spans(history, events), load_evals(run_dir), examples)
    out = out_dir / REPORT_FILE
    out.write_text(page, encoding="utf-8")
    return out

