"""Turning a reward spec into a scorer the trainer can call on a batch without ever seeing it raise.

A bad completion or a bug in a reward becomes `RewardResult(0.0, error=...)` for
that sample; the batched form, when it fails as a whole, falls back to one call
per sample so one poisoned sample does not zero the batch.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable
from typing import Any

from rft_jax.data.example import Example, flatten_messages
from rft_jax.rewards.registry import REWARDS, RewardEntry
from rft_jax.rewards.result import RewardResult, coerce, failed
from rft_jax.rewards.spec import RewardSpec, parse_spec


def text_example(example: Example) -> Example:
    """The example as a reward reads it: every message's content a string, as OpenAI's graders see it.

    Content given as text parts (OpenAI, Bedrock) is joined; an example already in
    strings is passed through as the same object.
    """
    if all(isinstance(m.get("content"), str) for m in example.messages):
        return example
    return dataclasses.replace(example, messages=flatten_messages(example.messages))


@dataclasses.dataclass(frozen=True)
class FunctionScorer:
    name: str
    entry: RewardEntry
    params: dict

    @property
    def needs_reference(self) -> bool:
        return self.entry.needs_reference

    def score(self, example: Example, completion: str) -> RewardResult:
        if not isinstance(completion, str):
            return failed(f"{self.name}: completion is {type(completion).__name__}, not str")
        try:
            return coerce(self.entry.fn(text_example(example), completion, **self.params))
        except Exception as err:  # a reward bug or hostile completion must not stop training
            return failed(f"{self.name}: {type(err).__name__}: {err}")

    def score_batch(self, examples: list[Example], completions: list[str]) -> list[RewardResult]:
        if len(examples) != len(completions):
            raise ValueError(f"{len(examples)} examples but {len(completions)} completions")  # caller bug
        if self.entry.batch_fn is not None and all(isinstance(c, str) for c in completions):
            try:
                results = list(self.entry.batch_fn([text_example(e) for e in examples], completions, **self.params))
                if len(results) == len(examples):
                    return [coerce(r) for r in results]
            except Exception:  # fall back to per-sample calls, which capture each error
                pass
        return [self.score(e, c) for e, c in zip(examples, completions)]

    def render_reference(self, example: Example) -> str:
        render = self.entry.render_reference
        return render(text_example(example)) if render else str(example.reference_answer)


@dataclasses.dataclass(frozen=True)
class AggregateScorer:
    """score = sum_i weight_i * score_i; each component's score is logged under its name."""
    name: str
    parts: dict[str, tuple[float, Any]]  # component name -> (weight, scorer)

    @property
    def needs_reference(self) -> bool:
        return any(s.needs_reference for _, s in self.parts.values())

    def score(self, example: Example, completion: str) -> RewardResult:
        return self.score_batch([example], [completion])[0]

    def score_batch(self, examples: list[Example], completions: list[str]) -> list[RewardResult]:
        per_part = {name: scorer.score_batch(examples, completions) for name, (_, scorer) in self.parts.items()}
        return [self._combine({name: results[i] for name, results in per_part.items()}) for i in range(len(examples))]

    def _combine(self, results: dict[str, RewardResult]) -> RewardResult:
        errors = [f"{name}: {r.error}" for name, r in results.items() if r.error]
        if errors:
            return RewardResult(0.0, components={n: r.score for n, r in results.items()}, error="; ".join(errors))
        total = sum(self.parts[name][0] * r.score for name, r in results.items())
        metrics = {f"{name}/{k}": v for name, r in results.items() for k, v in {**r.components, **r.metrics}.items()}
        return RewardResult(total, components={n: r.score for n, r in results.items()}, metrics=metrics)

    def render_reference(self, example: Example) -> str:
        for _, scorer in self.parts.values():
            text = scorer.render_reference(example)
            if text != str(example.reference_answer):
                return text
        return str(example.reference_answer)


def build_reward(spec: Any) -> FunctionScorer | AggregateScorer:
    """A scorer from a name, 'module:function', a dict, or a RewardSpec (see spec.py)."""
    parsed = parse_spec(spec)
    if parsed.name == "aggregate":
        if not parsed.components:
            raise ValueError("aggregate needs 'components': {name: spec, ...}")
        parts = {name: (sub.weight, build_reward(dataclasses.replace(sub, weight=1.0)))
                 for name, sub in parsed.components}
        return AggregateScorer("aggregate", parts)
    entry = REWARDS.get(parsed.name) or (user_entry(parsed.name) if ":" in parsed.name else None)
    if entry is None:
        raise ValueError(f"unknown reward {parsed.name!r}; built-ins: {', '.join(sorted(REWARDS))}, "
                         "aggregate, or 'module:function'")
    check_params(parsed, entry.batch_fn or entry.fn)
    if entry.check is not None:
        entry.check(**dict(parsed.params))
    return FunctionScorer(parsed.name, entry, dict(parsed.params))


def user_entry(target: str) -> RewardEntry:
    """`module:function`. Optional attributes on the function: `batched` (the batched form),
    `needs_reference` (bool), `render_reference` (example -> ideal completion)."""
    module_name, _, attr = target.partition(":")
    fn = getattr(importlib.import_module(module_name), attr)
    return RewardEntry(fn, batch_fn=getattr(fn, "batched", None),
                       needs_reference=bool(getattr(fn, "needs_reference", False)),
                       render_reference=getattr(fn, "render_reference", None))


def check_params(spec: RewardSpec, fn: Callable) -> None:
    """Fail at configuration time, not mid-training, on a misspelt parameter."""
    try:
        inspect.signature(fn).bind(None, "", **spec.params)
    except TypeError as err:
        raise ValueError(f"reward {spec.name!r}: bad parameters {sorted(spec.params)}: {err}") from None
    except ValueError:  # builtins without signatures
        pass
