"""`module`: the dataset's `tools`, bound by name to the functions of a user's Python module.

EnvironmentConfig.module is an importable module ("pkg.tools") or a file path
("path/to/tools.py"). Each tool of the example must name a function of that module;
the model's arguments are passed as keyword arguments and the return value (a string,
or anything JSON can write) is the tool's reply. A function's exceptions and
timeouts are contained like every tool's (see base.py).

    # tools.py                                   # a row of the dataset
    def get_weather(city: str) -> str:           {"messages": [...], "tools": [{"type": "function",
        return f"Sunny in {city}"                  "function": {"name": "get_weather", ...}}]}
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import os
from collections.abc import Callable
from types import ModuleType

from rft_jax.environments.base import ToolEnvironment


def tool_name(tool: object) -> str:
    """The function name of an OpenAI tool schema ({"type": "function", "function": {"name"}}; a flat {"name"} too)."""
    spec = tool.get("function", tool) if isinstance(tool, dict) else None
    name = spec.get("name") if isinstance(spec, dict) else None
    if not isinstance(name, str) or not name:
        raise ValueError(f"a tool schema without a function name: {tool!r}")
    return name


@functools.cache
def load_module(module: str) -> ModuleType:
    """Import `module`, a dotted module name or a .py file path (loaded once per process)."""
    if module.endswith(".py") or os.sep in module:
        path = os.path.abspath(module)
        if not os.path.isfile(path):
            raise ValueError(f"module environment: tools file {path} does not exist")
        name = f"rft_jax_user_tools_{hashlib.sha256(path.encode()).hexdigest()[:12]}"
        spec = importlib.util.spec_from_file_location(name, path)
        loaded = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(loaded)  # type: ignore[union-attr]
        return loaded
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ValueError(f"module environment: cannot import {module!r} ({err}); give an importable module "
                         "name or a path to a .py file") from err


def bind_tools(module: str, tools: list | None) -> dict[str, Callable[..., object]]:
    """{tool name: the module's function of that name}; a clear ValueError for any tool without one."""
    if not module:
        raise ValueError("the module environment needs EnvironmentConfig.module (a module name or a .py path)")
    if not tools:
        raise ValueError("the module environment binds the example's `tools` to functions; this example has none")
    loaded = load_module(module)
    public = sorted(n for n, v in vars(loaded).items() if callable(v) and not n.startswith("_"))
    functions = {}
    for tool in tools:
        name = tool_name(tool)
        fn = getattr(loaded, name, None)
        if not callable(fn):
            raise ValueError(f"tool {name!r} has no function in module {module!r}: define `def {name}(...)` "
                             f"there (the module's functions: {', '.join(public) or 'none'})")
        functions[name] = fn
    return functions


class ModuleEnvironment(ToolEnvironment):
    """The example's tools, each answered by the module function of the same name."""

    def __init__(self, module: str, tools: list | None, *, timeout_s: float = 5.0):
        super().__init__(bind_tools(module, tools), list(tools or []), timeout_s=timeout_s)
