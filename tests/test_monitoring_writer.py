"""MetricsWriter: files written and flushed every step, rollouts, alarms, primary-only, console line."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from rich.console import Console

from rft_jax.monitoring import MetricHistory, MetricsWriter, names
from rft_jax.monitoring.console import ConsoleView, format_key_figures
from rft_jax.monitoring.jsonl import append_jsonl, drop_after_step, read_jsonl, to_jsonable


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_metrics_are_on_disk_after_each_write(tmp_path):
    writer = MetricsWriter(tmp_path, console=False, tensorboard=False)
    writer.write(1, {names.REWARD_MEAN: np.float32(0.5), names.ENTROPY: 1})
    # Not closed: a crash right now must leave the step readable.
    (record,) = _lines(tmp_path / "metrics.jsonl")
    assert record["step"] == 1 and isinstance(record["time"], float)
    assert record[names.REWARD_MEAN] == 0.5 and record[names.ENTROPY] == 1.0
    assert record[names.ALARM_PREFIX + "truncation"] == 0.0
    writer.write(2, {names.REWARD_MEAN: 0.6})
    assert [r["step"] for r in _lines(tmp_path / "metrics.jsonl")] == [1, 2]


def test_tensorboard_events_written(tmp_path):
    with MetricsWriter(tmp_path, console=False) as writer:
        writer.write(1, {names.REWARD_MEAN: 0.5})
        events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
        assert events and events[0].stat().st_size > 0


def test_alarm_is_logged_once_to_alarms_jsonl(tmp_path):
    with MetricsWriter(tmp_path, console=False, tensorboard=False) as writer:
        for step in range(1, 6):
            out = writer.write(step, {names.RESPONSE_CLIP_RATIO: 0.5})
    assert out[names.ALARM_PREFIX + "truncation"] == 1.0
    (event,) = _lines(tmp_path / "alarms.jsonl")
    assert event["name"] == "truncation" and event["step"] == 1 and event["fix"]


def test_alarms_can_be_turned_off(tmp_path):
    with MetricsWriter(tmp_path, console=False, tensorboard=False, alarm_config=None) as writer:
        out = writer.write(1, {names.RESPONSE_CLIP_RATIO: 0.5})
    assert not any(k.startswith(names.ALARM_PREFIX) for k in out)


def test_rollouts_file_per_step_and_rewritten_on_resume(tmp_path):
    writer = MetricsWriter(tmp_path, console=False, tensorboard=False)
    records = [{"prompt": "2+2?", "completion": "4", "reward": np.float32(1.0), "components": {"correct": 1.0}}]
    path = writer.write_rollouts(7, records)
    writer.write_rollouts(7, records)
    assert path == tmp_path / "rollouts" / "step_7.jsonl"
    assert _lines(path) == [{"prompt": "2+2?", "completion": "4", "reward": 1.0, "components": {"correct": 1.0}}]


def test_non_primary_writes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    writer = MetricsWriter(run_dir, is_primary=False)
    assert writer.write(1, {names.REWARD_MEAN: 0.5}) == {names.REWARD_MEAN: 0.5}
    assert writer.write_rollouts(1, [{"a": 1}]) is None
    writer.close()
    assert not run_dir.exists()


def test_non_scalar_metric_is_an_error(tmp_path):
    writer = MetricsWriter(tmp_path, console=False, tensorboard=False)
    with pytest.raises(TypeError, match="not a scalar"):
        writer.write(1, {"bad": np.zeros(3)})


def test_jsonl_is_strict_json_and_survives_a_torn_line(tmp_path):
    path = tmp_path / "m.jsonl"
    append_jsonl(path, [{"step": 1, "x": float("nan"), "y": np.int64(3)}])
    with open(path, "a") as f:
        f.write('{"step": 2, "x": 0.')  # the process died mid-line
    assert list(read_jsonl(path)) == [{"step": 1, "x": None, "y": 3}]
    assert to_jsonable({"a": (np.float32(1.5), float("inf"))}) == {"a": [1.5, None]}


def test_history_from_records_skips_nulls():
    history = MetricHistory.from_records([{"step": 1, "time": 0.0, "a": 1.0}, {"step": 2, "a": None}, {"step": 3, "a": 3.0}])
    steps, values = history.series("a")
    assert steps.tolist() == [1, 3] and values.tolist() == [1.0, 3.0]
    assert "time" not in history.names()


def test_key_figures_line():
    line = format_key_figures({names.REWARD_MEAN: 0.4123, names.KL_LOSS: 0.00123, names.TOKENS_PER_S: 1234.5})
    assert line == "reward 0.412 | kl 1.23e-03 | tok/s 1234"


def test_console_logs_plain_lines_when_not_a_terminal():
    buffer = io.StringIO()
    view = ConsoleView(100, console=Console(file=buffer, force_terminal=False), log_every=5)
    for step in range(1, 11):
        metrics = {names.REWARD_MEAN: step / 10}
        if step == 5:
            metrics[names.VAL_REWARD_MEAN] = 0.33  # sparse: still shown at step 10
        view.update(step, metrics)
    view.print("ALARM x")
    view.close()
    lines = buffer.getvalue().splitlines()
    assert lines == ["step 1: reward 0.100", "step 5: reward 0.500 | val 0.330", "step 10: reward 1.000 | val 0.330", "ALARM x"]


def test_console_progress_bar_on_a_terminal():
    buffer = io.StringIO()
    view = ConsoleView(10, console=Console(file=buffer, force_terminal=True, width=160))
    view.update(3, {names.REWARD_MEAN: 0.25, names.ENTROPY: 0.5})
    view.close()
    assert "3/10" in buffer.getvalue() and "reward 0.250 | entropy 0.500" in buffer.getvalue()


def test_a_resumed_run_drops_the_records_of_the_steps_it_trains_again(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, [{"step": s, "x": s} for s in (0, 1, 2, 3, 4)] + [{"note": "no step"}])
    assert drop_after_step(path, 2) == 2
    assert [r.get("step") for r in read_jsonl(path)] == [0, 1, 2, None]
    assert drop_after_step(path, 2) == 0 and drop_after_step(tmp_path / "missing.jsonl", 2) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]  # no temporary file left
