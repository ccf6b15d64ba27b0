"""The code keeps to what JAX 0.11 (the GPU machines' version) still has, while CI runs 0.10.2: 0.11 is not
installable on the CPU machines, so its changelog's removals are checked in the source instead.

0.11 removed most of `jax.core` and `jax.interpreters.pxla`'s old names and `jax.cloud_tpu_init`, made
`jnp.empty`/`empty_like` uninitialised, and deprecated 2-D `jnp.cross`. The device suite
(benchmarks/device_suite.sh) is where the code actually runs on 0.11."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REMOVED_IN_0_11 = {
    r"\bjax\.core\b|from jax import core\b": "jax.core's public names (most were removed in 0.11)",
    r"\bjax\.interpreters\.pxla\b|from jax\.interpreters import pxla": "jax.interpreters.pxla's old names",
    r"\bcloud_tpu_init\b": "jax.cloud_tpu_init (removed)",
    r"\bjnp\.empty(_like)?\(": "jnp.empty (uninitialised from 0.11: use jnp.zeros)",
    r"\bjnp\.cross\(": "jnp.cross (2-D inputs deprecated in 0.11)",
}


def _sources() -> list[Path]:
    return [p for folder in ("rft_jax", "kernels", "benchmarks", "experiments")
            for p in sorted((ROOT / folder).rglob("*.py"))]


@pytest.mark.parametrize("pattern", sorted(REMOVED_IN_0_11))
def test_no_api_that_jax_0_11_removed_or_changed(pattern):
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in _sources()
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(pattern, line) and not line.lstrip().startswith("#")]
    assert not hits, f"{REMOVED_IN_0_11[pattern]}: {hits}"


def test_the_scan_sees_the_code():
    assert len(_sources()) > 100 and any(p.name == "trainer.py" for p in _sources())
