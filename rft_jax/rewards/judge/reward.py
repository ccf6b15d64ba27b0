"""The `judge` reward: the registry-facing functions and their configuration.

    {"name": "judge",
     "rubric": {"text": "Is the reply polite and helpful?", "scale": [1, 10]},
     "base_url": "http://127.0.0.1:8000/v1", "model": "smollm2-135m-instruct"}   # OpenAI-compatible endpoint
    {"name": "judge", "rubric": "...", "model": "smollm2-135m-instruct"}         # local model, no base_url

Combine with rule-based rewards through `aggregate` like any other reward.
Judges are built once per distinct configuration and kept for the process, so
the local model is loaded once and the reply cache lives across steps.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import threading
from typing import Any

from rft_jax.data.example import Example
from rft_jax.rewards.judge.backend_http import OpenAIBackend
from rft_jax.rewards.judge.backend_local import LocalBackend
from rft_jax.rewards.judge.cache import JudgeCache
from rft_jax.rewards.judge.judge import Judge
from rft_jax.rewards.judge.parse import PARSE_RULES
from rft_jax.rewards.judge.rubric import parse_rubric


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
    """Every parameter of the `judge` reward (keys of its spec)."""

    rubric: Any
    """Rubric text, or {"text", "criteria" | "labels", "scale"} (see rubric.py)."""
    model: str = "smollm2-135m-instruct"
    """The judge model: a name the endpoint knows, or (no base_url) a model rft_jax loads."""
    base_url: str | None = None
    """OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1; None runs the model locally."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the endpoint's API key (sent only when set)."""
    parse: str = "auto"
    """How the verdict is read: number | label | json | auto (from the rubric's form)."""
    mode: str = "pointwise"
    """pointwise: score each completion; pairwise: compare completions, score = win rate."""
    against: str = "group"
    """Pairwise opponents: the example's other completions in the batch (group) or its reference."""
    both_orders: bool = True
    """Pairwise: ask each pair as (A, B) and (B, A) to cancel position bias (twice the calls)."""
    samples: int = 1
    """Judge replies per prompt, averaged (use a temperature > 0 with samples > 1)."""
    temperature: float = 0.0
    max_tokens: int = 256
    """Judge reply budget: enough for a short justification and the verdict line."""
    concurrency: int = 8
    """Endpoint requests in flight at once."""
    timeout_s: float = 60.0
    retries: int = 3
    batch_size: int = 16
    """Local backend: prompts per sampler call."""
    seed: int = 0
    cache_path: str | None = None
    """JSONL file that keeps judge replies across runs (memory only when None)."""

    def build(self) -> Judge:
        if self.parse not in PARSE_RULES:
            raise ValueError(f"judge parse rule {self.parse!r}; choose from {PARSE_RULES}")
        if self.samples < 1:
            raise ValueError("judge samples must be >= 1")
        if self.base_url:
            backend = OpenAIBackend(self.base_url, self.model, self.api_key_env, self.temperature, self.max_tokens,
                                    self.concurrency, self.timeout_s, self.retries)
        else:
            backend = LocalBackend(self.model, temperature=self.temperature, max_tokens=self.max_tokens,
                                   batch_size=self.batch_size, seed=self.seed)
        return Judge(parse_rubric(self.rubric), backend, parse=self.parse, samples=self.samples, mode=self.mode,
                     against=self.against, both_orders=self.both_orders, cache=JudgeCache(self.cache_path))


_JUDGES: dict[str, Judge] = {}
_LOCK = threading.Lock()


def get_judge(params: dict) -> Judge:
    """The judge of a configuration, built on first use."""
    key = json.dumps(params, sort_keys=True, default=str)
    with _LOCK:
        if key not in _JUDGES:
            _JUDGES[key] = JudgeConfig(**params).build()
        return _JUDGES[key]


def judge_reward_batch(examples: list[Example], completions: list[str], **params) -> list:
    """Scores a batch (a GRPO step's completions together, so pairwise mode sees each group)."""
    return get_judge(params).score_batch(examples, completions)


def judge_reward(example: Example, completion: str, **params):
    return judge_reward_batch([example], [completion], **params)[0]


def _signature(first: str, second: str) -> inspect.Signature:
    """(first, second, *, <JudgeConfig fields>): lets the reward registry reject a misspelt key at build time."""
    kinds = [inspect.Parameter(first, inspect.Parameter.POSITIONAL_OR_KEYWORD),
             inspect.Parameter(second, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for f in dataclasses.fields(JudgeConfig):
        default = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
        kinds.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default))
    return inspect.Signature(kinds)


judge_reward_batch.__signature__ = _signature("examples", "completions")
judge_reward.__signature__ = _signature("example", "completion")
# `module:function` specs read the batched form from this attribute (rewards/scorer.py: user_entry).
judge_reward.batched = judge_reward_batch
