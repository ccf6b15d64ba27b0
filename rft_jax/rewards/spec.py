"""How configuration names a reward: a registered name, `module:function`, or a dict.

    "math_answer"
    "my_pkg.rewards:brevity"
    {"name": "math_answer", "mode": "strict_line"}
    {"name": "aggregate", "components": {
        "correct": {"name": "math_answer", "mode": "strict_line", "weight": 1.0},
        "format":  {"name": "answer_format", "weight": 0.2}}}

Every key other than `name` and `weight` is a parameter passed to the reward.

An OpenAI RFT grader, as its JSON is written for OpenAI (it has a `type` key), is a spec too:

    {"type": "string_check", "name": "exact", "operation": "eq",
     "input": "{{sample.output_text}}", "reference": "{{item.reference_answer}}"}

It is checked when read and becomes {"name": "openai_grader", "grader": {...}} (see rewards/openai_graders);
a `weight` key next to its `type` is taken as its weight inside an aggregate.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from rft_jax.rewards.openai_graders.check import check_grader, is_openai_grader

OPENAI_GRADER = "openai_grader"


@dataclasses.dataclass(frozen=True)
class RewardSpec:
    """A reward as a typed tree: a grader's name and parameters, or an aggregate of named components."""

    name: str
    params: dict = dataclasses.field(default_factory=dict)
    """Keyword arguments of the reward function (every JSON key but name, weight and components)."""
    weight: float = 1.0
    """This component's weight inside an aggregate."""
    components: tuple[tuple[str, RewardSpec], ...] = ()
    """For `aggregate`: (name, spec) pairs; the score is the weighted sum and each part is logged by name."""

    @classmethod
    def aggregate(cls, **components: RewardSpec) -> RewardSpec:
        return cls("aggregate", components=tuple(components.items()))

    def to_json(self) -> dict:
        """The dict form that `parse_spec` reads back (what config.json and the command line hold)."""
        out: dict[str, Any] = {"name": self.name, **self.params}
        if self.weight != 1.0:
            out["weight"] = self.weight
        if self.components:
            out["components"] = {name: sub.to_json() for name, sub in self.components}
        return out


def parse_spec(spec: Any) -> RewardSpec:
    if isinstance(spec, RewardSpec):
        return spec
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("{"):
            try:
                loaded = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"reward spec {text!r} is not valid JSON ({err}): check its quotes and braces, "
                                 "or save it to a .json file and name the file") from None
            return parse_spec(loaded)
        if text.endswith(".json"):
            return read_spec_file(text)
        return RewardSpec(text)
    if isinstance(spec, dict):
        if is_openai_grader(spec):  # `weight`, for an aggregate's component, is rft_jax's, not the grader's
            grader = {k: v for k, v in spec.items() if k != "weight"}
            spec = {"name": OPENAI_GRADER, "grader": grader, **({"weight": spec["weight"]} if "weight" in spec else {})}
        if "name" not in spec:
            raise ValueError(f"reward spec needs a 'name': {spec}")
        components = spec.get("components", {})
        if not isinstance(components, dict):
            raise ValueError(f"'components' of a reward spec maps names to specs, got {type(components).__name__}")
        params = {k: v for k, v in spec.items() if k not in ("name", "weight", "components")}
        if spec["name"] == OPENAI_GRADER:
            check_grader(params.get("grader"))
        return RewardSpec(str(spec["name"]), params, float(spec.get("weight", 1.0)),
                          tuple((str(k), parse_spec(v)) for k, v in components.items()))
    raise TypeError(f"a reward spec is a name, 'module:function', a dict or a RewardSpec; got {type(spec).__name__}")


def read_spec_file(path: str) -> RewardSpec:
    """A reward spec or OpenAI grader saved as JSON; errors name the file."""
    if not os.path.isfile(path):
        raise ValueError(f"reward file {path} not found (from {os.getcwd()}): a reward ending in .json is read "
                         "from that file; check the path")
    with open(path, encoding="utf-8") as f:
        try:
            spec = json.load(f)
        except ValueError as err:  # json.JSONDecodeError, UnicodeDecodeError
            raise ValueError(f"{path}: not valid JSON ({err}): a reward file holds one JSON object: a reward "
                             "spec or an OpenAI grader") from None
    try:
        return parse_spec(spec)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: {err}") from None
