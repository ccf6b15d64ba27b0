"""Training-curve PNGs from a metric history, for the report and for the trainer's own snapshots.

Figures are built with `matplotlib.figure.Figure` (Agg canvas), never pyplot:
no global figure state, no GUI backend, safe to call from a training loop.
Per-step RL curves are noisy, so each is drawn faint with a centered moving
average on top (centered, unlike an EMA, so a jump shows at the step it happened).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib.figure import Figure

from rft_jax.monitoring import names
from rft_jax.monitoring.history import MetricHistory
from rft_jax.monitoring.jsonl import read_jsonl


class Panel(NamedTuple):
    """One chart: the metrics it draws, listed by name and/or matched by prefix."""

    key: str
    title: str
    metrics: tuple[str, ...] = ()
    prefix: str | None = None
    ylabel: str = ""

    def select(self, available: list[str]) -> list[str]:
        chosen = [m for m in self.metrics if m in available]
        if self.prefix is not None:
            chosen += sorted(m for m in available if m.startswith(self.prefix) and m not in chosen)
        return chosen


# Sparse metrics (logged every eval_every steps) are drawn as points joined by lines, unsmoothed.
SPARSE_PREFIXES = ("val/",)

PANELS: tuple[Panel, ...] = (
    Panel("reward", "Reward (train and validation)", (names.REWARD_MEAN, names.VAL_REWARD_MEAN, names.VAL_PASS_AT_1), ylabel="reward"),
    Panel("reward_components", "Reward components", prefix=names.REWARD_COMPONENT_PREFIX, ylabel="mean"),
    Panel("entropy", "Policy entropy", (names.ENTROPY,), ylabel="nats/token"),
    Panel("kl", "KL divergence", (names.REF_KL, names.KL_LOSS, names.PPO_KL), ylabel="nats/token"),
    Panel(
        "response_length",
        "Response length",
        (names.RESPONSE_LENGTH_MEAN, names.RESPONSE_LENGTH_MAX, names.RESPONSE_LENGTH_MIN, names.PROMPT_LENGTH_MEAN),
        ylabel="tokens",
    ),
    Panel(
        "signal",
        "Learning signal: zero-variance, truncation, reward errors",
        (names.ZERO_STD_FRAC, names.RESPONSE_CLIP_RATIO, names.REWARD_ERRORS),
        ylabel="share",
    ),
    # Reasoning mode only: two panels, as tokens and shares do not share an axis.
    Panel("reasoning_length", "Reasoning: think and answer length",
          (names.THINK_LENGTH_MEAN, names.ANSWER_LENGTH_MEAN), ylabel="tokens"),
    Panel("reasoning_form", "Reasoning: think budget hits and well-formed answers",
          (names.BUDGET_HIT_RATE, names.WELL_FORMED_RATE), ylabel="share"),
    # Asynchronous RL only: how stale the trained episodes were, and what the off-policy correction did.
    Panel("staleness", "Asynchronous: staleness of the trained episodes",
          (names.STALENESS_MEAN, names.STALENESS_MAX), ylabel="policy versions"),
    Panel("off_policy", "Off-policy correction: IS ratio, masked share, mismatch KL",
          (names.IS_RATIO_MEAN, names.IS_RATIO_MAX, names.IS_MASKED_FRAC, names.MISMATCH_KL)),
    Panel("clipfrac", "Policy-ratio clip fraction", (names.PG_CLIPFRAC,), ylabel="share"),
    Panel("loss", "Policy loss and gradient norm", (names.PG_LOSS, names.GRAD_NORM)),
    Panel("lr", "Learning rate", (names.LR,)),
    Panel("timing", "Time per step", prefix=names.TIMING_PREFIX, ylabel="seconds"),
    Panel("throughput", "Throughput", (names.TOKENS_PER_S,), ylabel="tokens/s"),
)


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centered moving average over `window` points; at the edges, over the points that exist."""
    half = window // 2
    padded = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    idx = np.arange(values.size)
    lo, hi = np.maximum(idx - half, 0), np.minimum(idx + half + 1, values.size)
    return (padded[hi] - padded[lo]) / (hi - lo)


def _draw(ax, history: MetricHistory, metric: str, color: str) -> None:
    steps, values = history.series(metric)
    if metric.startswith(SPARSE_PREFIXES) or values.size < 10:
        ax.plot(steps, values, "o-", color=color, ms=3, lw=1.2, label=metric)
        return
    ax.plot(steps, values, color=color, lw=0.8, alpha=0.3)
    ax.plot(steps, moving_average(values, max(3, values.size // 25)), color=color, lw=1.6, label=metric)


def plot_panel(history: MetricHistory, panel: Panel) -> Figure | None:
    """The panel's figure, or None when the run logged none of its metrics."""
    metrics = [m for m in panel.select(history.names()) if history.series(m)[1].size]
    if not metrics:
        return None
    fig = Figure(figsize=(6.4, 3.4), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    colors = [f"C{i}" for i in range(10)]
    for i, metric in enumerate(metrics):
        _draw(ax, history, metric, colors[i % len(colors)])
    if panel.key == "reward":
        steps, low = history.series(names.REWARD_MIN)
        steps_hi, high = history.series(names.REWARD_MAX)
        if low.size and low.size == high.size and np.array_equal(steps, steps_hi):
            ax.fill_between(steps, low, high, color="C0", alpha=0.08, lw=0, label="train min-max")
    ax.set_title(panel.title, fontsize=11)
    ax.set_xlabel("step")
    ax.set_ylabel(panel.ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig


def figure_png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def plot_training_curves(metrics_jsonl_path: str | Path, out_png: str | Path) -> Path:
    """Save the reward/validation chart of a run's `metrics.jsonl` as a PNG (for the trainer's snapshots)."""
    history = MetricHistory.from_records(read_jsonl(Path(metrics_jsonl_path)))
    fig = plot_panel(history, PANELS[0])
    if fig is None:  # no reward logged yet: still leave a file, so a watcher's image does not 404
        fig = Figure(figsize=(6.4, 3.4), dpi=100)
        fig.text(0.5, 0.5, "no reward logged yet", ha="center", va="center")
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(figure_png(fig))
    return out
