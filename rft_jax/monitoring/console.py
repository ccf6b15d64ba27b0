"""The live console view: a progress bar carrying the few figures worth watching.

On a terminal it is a rich progress bar updated in place. In a log file (CI, a
batch job) an in-place bar renders as nothing useful, so it prints one plain
line every `log_every` steps instead.
"""

from __future__ import annotations

from collections.abc import Mapping

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from rft_jax.monitoring import names

# (metric, short label, format spec): what a person watching a run looks at.
KEY_FIGURES: tuple[tuple[str, str, str], ...] = (
    (names.REWARD_MEAN, "reward", ".3f"),
    (names.VAL_REWARD_MEAN, "val", ".3f"),
    (names.ENTROPY, "entropy", ".3f"),
    (names.KL_LOSS, "kl", ".2e"),
    (names.RESPONSE_LENGTH_MEAN, "len", ".0f"),
    (names.TOKENS_PER_S, "tok/s", ".0f"),
)
_KEY_NAMES = frozenset(name for name, _, _ in KEY_FIGURES)


def format_key_figures(latest: Mapping[str, float]) -> str:
    """`reward 0.412 | val 0.380 | ...` for the figures present (validation is sparse)."""
    parts = []
    for name, label, spec in KEY_FIGURES:
        value = latest.get(name)
        if value is not None:
            parts.append(f"{label} {value:{spec}}")
    return " | ".join(parts)


class ConsoleView:
    """Shows training progress; `latest` keeps each figure's last value across steps."""

    def __init__(self, total_steps: int | None = None, *, console: Console | None = None, log_every: int = 10):
        self.console = console or Console(stderr=True)
        self.log_every = log_every
        self.latest: dict[str, float] = {}
        self._progress: Progress | None = None
        if self.console.is_terminal:
            self._progress = Progress(
                TextColumn("[bold]GRPO"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[figures]}"),
                console=self.console,
            )
            self._task = self._progress.add_task("train", total=total_steps, figures="")
            self._progress.start()

    def update(self, step: int, metrics: Mapping[str, float]) -> None:
        self.latest.update({k: float(v) for k, v in metrics.items() if k in _KEY_NAMES and v is not None})
        figures = format_key_figures(self.latest)
        if self._progress is not None:
            self._progress.update(self._task, completed=step, figures=figures)
        elif step == 1 or step % self.log_every == 0:
            self.console.print(f"step {step}: {figures}", highlight=False, soft_wrap=True)

    def print(self, text: str) -> None:
        """A message above the bar (alarms), without tearing the live display."""
        self.console.print(text, style="bold yellow", highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
