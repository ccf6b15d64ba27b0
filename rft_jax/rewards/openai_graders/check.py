"""Configuration-time checks of an OpenAI grader, with errors that say what to write instead.

`parse_spec` runs these, so a bad grader fails when the config is read, not in the
middle of a training run. Only light modules are imported here (spec.py loads this).
"""

from __future__ import annotations

import ast
import numbers
from typing import Any

from rft_jax.data.chat_text import ACCEPTED_ROLES, UnusableRecord, flatten_content
from rft_jax.rewards.openai_graders import formula
from rft_jax.rewards.openai_graders.templating import TemplateError, check_template

TYPES = ("string_check", "text_similarity", "python", "score_model", "multi")
REFUSED = {
    "label_model": "label_model graders are not supported; use a score_model grader (a judge that gives a number), "
                   "or rft_jax's judge reward with rubric labels: {\"name\": \"judge\", \"rubric\": {\"text\": ..., "
                   "\"labels\": {...}}}",
    "endpoint": "endpoint graders are not supported; serve the reward and use {\"name\": \"remote\", \"url\": ...}",
}
OPERATIONS = ("eq", "ne", "neq", "like", "ilike")
"""`neq` is the spelling in the graders guide's prose; the API's is `ne`. Both mean "not equal"."""
SIMILARITY_METRICS = ("fuzzy_match", "bleu", "gleu", "meteor", "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5",
                      "rouge_l")
COSINE = ("text_similarity evaluation_metric 'cosine' needs an embeddings model (OpenAI embeds with "
          "text-embedding-3-large, in evals only), and rft_jax calls none. For word overlap use 'fuzzy_match', "
          "'rouge_l', 'bleu' or 'meteor'; to grade meaning use a score_model grader (rft_jax's judge reward).")
ROLES = tuple(role for role in ACCEPTED_ROLES if role != "tool")
"""A grader's input messages (OpenAI's EvalItem roles): the chat roles but tool."""
SAMPLING_PARAMS = ("seed", "top_p", "temperature", "max_completions_tokens", "max_completion_tokens",
                   "reasoning_effort")
MAX_SOURCE_BYTES = 256 * 1024
"""OpenAI's limit on a python grader's source."""


def is_openai_grader(spec: Any) -> bool:
    """OpenAI graders carry a `type`; rft_jax specs a `name` and no reward takes a `type` parameter."""
    return isinstance(spec, dict) and "type" in spec


def label(grader: dict) -> str:
    name = grader.get("name")
    return f"OpenAI {grader.get('type')} grader" + (f" {name!r}" if name else "")


def check_grader(grader: Any, *, nested: bool = False) -> dict:
    """The grader itself when it is well formed; ValueError otherwise."""
    if not isinstance(grader, dict):
        raise ValueError(f"an OpenAI grader is a JSON object, got {type(grader).__name__}")
    kind = grader.get("type")
    if kind in REFUSED:
        raise ValueError(REFUSED[kind])
    if kind not in TYPES:
        raise ValueError(f"unknown OpenAI grader type {kind!r}; rft_jax runs {', '.join(TYPES)}")
    if nested and kind == "multi":
        raise ValueError(f"{label(grader)}: a multi grader cannot hold another multi grader (as in OpenAI's RFT)")
    try:
        CHECKS[kind](grader)
    except TemplateError as err:
        raise ValueError(f"{label(grader)}: {err}") from None
    return grader


def _number(grader: dict, key: str) -> None:
    value = grader.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
        raise ValueError(f"{label(grader)}: {key} must be a number, got {value!r}")


def check_string_check(grader: dict) -> None:
    check_template(grader.get("input"), "input")
    check_template(grader.get("reference"), "reference")
    if grader.get("operation") not in OPERATIONS:
        raise ValueError(f"{label(grader)}: operation must be one of {', '.join(OPERATIONS)}, "
                         f"got {grader.get('operation')!r}")


def check_text_similarity(grader: dict) -> None:
    check_template(grader.get("input"), "input")
    check_template(grader.get("reference"), "reference")
    metric = grader.get("evaluation_metric")
    if metric == "cosine":
        raise ValueError(f"{label(grader)}: {COSINE}")
    if metric not in SIMILARITY_METRICS:
        raise ValueError(f"{label(grader)}: evaluation_metric must be one of {', '.join(SIMILARITY_METRICS)}, "
                         f"got {metric!r}")
    _number(grader, "pass_threshold")


def check_python(grader: dict) -> None:
    source = grader.get("source")
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"{label(grader)}: 'source' must hold Python code defining grade(sample, item)")
    if len(source.encode()) > MAX_SOURCE_BYTES:
        raise ValueError(f"{label(grader)}: source is {len(source.encode())} bytes; the limit is 256 kB")
    try:
        tree = ast.parse(source)  # parsing runs none of the code
    except SyntaxError as err:
        raise ValueError(f"{label(grader)}: source line {err.lineno}: {err.msg}") from None
    grade = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == "grade"]
    if not grade:
        raise ValueError(f"{label(grader)}: source must define grade(sample, item) at top level")
    args = grade[-1].args
    if len(args.posonlyargs) + len(args.args) < 2 and args.vararg is None:
        raise ValueError(f"{label(grader)}: grade must take two arguments, (sample, item)")


def check_score_model(grader: dict) -> None:
    if not isinstance(grader.get("model"), str) or not grader["model"].strip():
        raise ValueError(f"{label(grader)}: 'model' names the grader model, e.g. \"gpt-4.1-mini-2025-04-14\"")
    messages = grader.get("input")
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{label(grader)}: 'input' must be a non-empty list of {{role, content}} messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ValueError(f"{label(grader)}: input[{i}] needs a role among {', '.join(ROLES)}")
        check_template(input_text(grader, i, message.get("content")), f"input[{i}] content")
    lo_hi = grader.get("range", [0, 1])
    if (not isinstance(lo_hi, (list, tuple)) or len(lo_hi) != 2 or any(isinstance(x, bool) or not isinstance(x, numbers.Real)
                                                               for x in lo_hi) or lo_hi[0] >= lo_hi[1]):
        raise ValueError(f"{label(grader)}: range must be [low, high] with low < high, got {lo_hi!r}")
    _number(grader, "pass_threshold")
    params = grader.get("sampling_params") or {}
    unknown = set(params) - set(SAMPLING_PARAMS) if isinstance(params, dict) else {"(not an object)"}
    if unknown:
        raise ValueError(f"{label(grader)}: unknown sampling_params {sorted(unknown)}; known: "
                         f"{', '.join(SAMPLING_PARAMS)}")


def input_text(grader: dict, i: int, content: Any) -> str:
    """The text of input[i], read as score_model's run reads it (flatten_content: a string, or text parts
    such as {"type": "input_text", "text": ...} or plain strings); images and audio are refused."""
    try:
        if content is None:
            raise UnusableRecord(f"input[{i}] has no content")
        return flatten_content(content, f"input[{i}] content")
    except UnusableRecord as err:
        raise ValueError(f"{label(grader)}: {err}; grader input must be text: a string or a list of text "
                         "parts") from None


def check_multi(grader: dict) -> None:
    graders = grader.get("graders")
    if not isinstance(graders, dict) or not graders:
        raise ValueError(f"{label(grader)}: 'graders' must map names to graders, e.g. {{\"name\": {{...}}}}")
    for sub in graders.values():
        check_grader(sub, nested=True)
    try:
        formula.parse(grader.get("calculate_output"), graders)
    except ValueError as err:
        raise ValueError(f"{label(grader)}: {err}") from None


CHECKS = {"string_check": check_string_check, "text_similarity": check_text_similarity, "python": check_python,
          "score_model": check_score_model, "multi": check_multi}
