"""Monitoring of a training run: metric files, TensorBoard, the console view, alarms, curves.

The trainer needs `MetricsWriter` (and `names` for the metric keys); see docs/monitoring.md.
"""

from rft_jax.monitoring import names
from rft_jax.monitoring.alarm_monitor import AlarmEvent, AlarmMonitor
from rft_jax.monitoring.alarms import ALARMS, AlarmConfig
from rft_jax.monitoring.history import MetricHistory
from rft_jax.monitoring.plots import plot_training_curves
from rft_jax.monitoring.writer import MetricsWriter

__all__ = [
    "ALARMS",
    "AlarmConfig",
    "AlarmEvent",
    "AlarmMonitor",
    "MetricHistory",
    "MetricsWriter",
    "names",
    "plot_training_curves",
]
