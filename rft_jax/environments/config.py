"""Which environment an episode runs in, and the `name -> factory` table that builds one per episode."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

from rft_jax.data.example import Example
from rft_jax.environments.base import Environment
from rft_jax.environments.calculator import CalculatorEnvironment
from rft_jax.environments.module_tools import ModuleEnvironment
from rft_jax.environments.python import PythonEnvironment
from rft_jax.environments.remote import RemoteEnvironment
from rft_jax.environments.sqlite import SqliteEnvironment


@dataclasses.dataclass(frozen=True)
class EnvironmentConfig:
    """The tools an episode can call (docs/environments.md). "none": single-turn completions, no tools."""

    name: Literal["none", "calculator", "sqlite", "python", "module", "remote"] = "none"
    """calculator: safe arithmetic; sqlite: read-only SQL over the example's database; python: code in the
    sandbox; module: the dataset's `tools` bound to `module`'s functions; remote: an HTTP environment at `url`."""
    timeout_s: float = 5.0
    """Seconds each tool call (or remote request) may take; past it the model reads a timeout error."""
    module: str = ""
    """module: a Python module ("pkg.tools") or file ("path/to/tools.py") whose functions implement the
    dataset's `tools`, by name."""
    url: str = ""
    """remote: base URL of an HTTP environment serving /reset, /step and /close (e.g. http://localhost:8000)."""
    database_field: str = "database"
    """sqlite: the example metadata field holding its database (a .sqlite file path or SQL that builds it)."""


FACTORIES: dict[str, Callable[[EnvironmentConfig, Example], Environment]] = {
    "calculator": lambda cfg, example: CalculatorEnvironment(timeout_s=cfg.timeout_s),
    "sqlite": lambda cfg, example: SqliteEnvironment(database_field=cfg.database_field, timeout_s=cfg.timeout_s),
    "python": lambda cfg, example: PythonEnvironment(timeout_s=cfg.timeout_s),
    "module": lambda cfg, example: ModuleEnvironment(cfg.module, example.tools, timeout_s=cfg.timeout_s),
    "remote": lambda cfg, example: RemoteEnvironment(cfg.url, timeout_s=cfg.timeout_s, tools=example.tools),
}


def make_environment(cfg: EnvironmentConfig, example: Example) -> Environment:
    """A fresh environment for one episode of `example` (the caller then calls reset(example))."""
    if cfg.name not in FACTORIES:
        hint = ' ("none" means single-turn episodes without tools, so there is nothing to build)'
        raise ValueError(f"no environment named {cfg.name!r}{hint if cfg.name == 'none' else ''}; "
                         f"choose one of: {', '.join(FACTORIES)}")
    if cfg.timeout_s <= 0:
        raise ValueError(f"environment timeout_s must be positive, got {cfg.timeout_s}")
    return FACTORIES[cfg.name](cfg, example)
