"""How configuration names a reward: a registered name, `module:function`, or a dict.

    "math_answer"
    "my_pkg.rewards:brevity"
    {"name": "math_answer", "mode": "strict_line"}
    {"name": "aggregate", "components": {
        "correct": {"name": "math_answer", "mode": "strict_line", "weight": 1.0},
        "format":  {"name": "answer_format", "weight": 0.2}}}

Every key other than `name` and `weight` is a parameter passed to the reward.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any


@dataclasses.dataclass(frozen=True)
class RewardSpec:
    name: str
    params: dict = dataclasses.field(default_factory=dict)
    weight: float = 1.0


def parse_spec(spec: Any) -> RewardSpec:
    if isinstance(spec, RewardSpec):
        return spec
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("{"):
            return parse_spec(json.loads(text))
        if text.endswith(".json") and os.path.exists(text):
            with open(text, encoding="utf-8") as f:
                return parse_spec(json.load(f))
        return RewardSpec(text)
    if isinstance(spec, dict):
        if "name" not in spec:
            raise ValueError(f"reward spec needs a 'name': {spec}")
        params = {k: v for k, v in spec.items() if k not in ("name", "weight")}
        return RewardSpec(str(spec["name"]), params, float(spec.get("weight", 1.0)))
    raise TypeError(f"a reward spec is a name, 'module:function', a dict or a RewardSpec; got {type(spec).__name__}")
