"""Sweeps as data: an experiment's base config run over a list of overrides and seeds (docs/sweeps.md)."""

from rft_jax.sweep.spec import Run, Sweep, axis, grid, product, runs, zipped

__all__ = ["Run", "Sweep", "axis", "grid", "product", "runs", "zipped"]
