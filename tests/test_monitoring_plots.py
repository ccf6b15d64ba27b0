"""Training-curve PNGs: the trainer's snapshot and the report's panels."""

from __future__ import annotations

import numpy as np
import pytest

from rft_jax.monitoring import MetricHistory, names, plot_training_curves
from rft_jax.monitoring.jsonl import append_jsonl
from rft_jax.monitoring.plots import PANELS, Panel, moving_average, plot_panel

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plot_training_curves_writes_a_png(tmp_path):
    records = [{"step": s, "time": float(s), names.REWARD_MEAN: s / 50, names.REWARD_MIN: 0.0, names.REWARD_MAX: 1.0} for s in range(1, 51)]
    records += [{"step": s, names.VAL_REWARD_MEAN: s / 60} for s in (10, 20, 30)]
    append_jsonl(tmp_path / "metrics.jsonl", records)
    out = plot_training_curves(tmp_path / "metrics.jsonl", tmp_path / "plots" / "curves.png")
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_plot_training_curves_before_any_reward(tmp_path):
    append_jsonl(tmp_path / "metrics.jsonl", [{"step": 1, names.ENTROPY: 1.0}])
    assert plot_training_curves(tmp_path / "metrics.jsonl", tmp_path / "c.png").read_bytes().startswith(PNG_MAGIC)


def test_panel_absent_metrics_gives_no_figure():
    history = MetricHistory()
    history.append(1, {names.ENTROPY: 1.0})
    assert plot_panel(history, PANELS[0]) is None
    assert plot_panel(history, next(p for p in PANELS if p.key == "entropy")) is not None


def test_panel_prefix_selects_dynamic_metrics():
    panel = Panel("t", "timing", (names.TIMING_STEP,), prefix=names.TIMING_PREFIX)
    assert panel.select([names.TIMING_UPDATE, "x", names.TIMING_STEP, names.TIMING_GENERATE]) == [
        names.TIMING_STEP, names.TIMING_GENERATE, names.TIMING_UPDATE,
    ]


def test_moving_average_is_centered():
    assert moving_average(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 3).tolist() == [1.5, 2.0, 3.0, 4.0, 4.5]
    step = np.array([0.0] * 5 + [1.0] * 5)
    assert moving_average(step, 3)[4] == pytest.approx(1 / 3) and moving_average(step, 3)[3] == 0.0
