"""OpenAI `score_model`, run by rft_jax's judge: the templated `input` messages go to a grader model,
and its numeric `result`, clamped to `range`, is the score.

How the grader's keys map onto the judge reward's settings (rewards/judge/reward.py, JudgeConfig):
    model                                    -> model
    base_url     (rft_jax's key, optional)   -> base_url. Absent: https://api.openai.com/v1, the API whose
                                                model OpenAI's grader names. null: load `model` in-process.
    api_key_env  (rft_jax's key, optional)   -> api_key_env (default OPENAI_API_KEY)
    sampling_params.temperature              -> temperature (default 0)
    sampling_params.max_completions_tokens   -> max_tokens (default 1024; max_completion_tokens also read)
    sampling_params.seed                     -> seed
    sampling_params.top_p, reasoning_effort  -> accepted, not sent: the judge backends have no such setting
    range, pass_threshold                    -> clamping here, and the `passed` metric
Messages go through data.example.flatten_messages, like every prompt: text parts are joined and a
"developer" message is sent as "system" (what OpenAI-compatible servers and chat templates know).
OpenAI asks its grader model for {"result": float, "steps": [...]} through a response format; the judge
backends send plain chat requests, so the same shape is asked for in words, appended to the last user turn.
A reply without a number scores 0.0 as OpenAI documents, with an error so it counts as a reward error.
Replies are cached and retried like every judge's.
"""

from __future__ import annotations

import json
import math
import re

from rft_jax.data.example import flatten_messages
from rft_jax.rewards.judge.parse import NUMBER
from rft_jax.rewards.judge.reward import get_judge
from rft_jax.rewards.openai_graders.check import label
from rft_jax.rewards.openai_graders.templating import TemplateError, render
from rft_jax.rewards.result import RewardResult, failed

DEFAULT_BASE_URL = "https://api.openai.com/v1"
OUTPUT_FORMAT = ('Reply with only a JSON object {{"steps": [{{"description": "...", "conclusion": "..."}}], '
                 '"result": R}}, where R is a number from {lo:g} to {hi:g}.')


def judge_params(grader: dict) -> dict:
    """The judge reward's parameters for this grader (the mapping in the module docstring)."""
    sampling = grader.get("sampling_params") or {}
    params = {"rubric": f"OpenAI score_model grader {grader.get('name', '')}".strip(), "model": grader["model"],
              "base_url": grader.get("base_url", DEFAULT_BASE_URL),
              "api_key_env": grader.get("api_key_env", "OPENAI_API_KEY"),
              "max_tokens": int(sampling.get("max_completions_tokens", sampling.get("max_completion_tokens", 1024)))}
    if "temperature" in sampling:
        params["temperature"] = float(sampling["temperature"])
    if "seed" in sampling:
        params["seed"] = int(sampling["seed"])
    return params


def conversation(grader: dict, item: dict, sample: dict) -> list[dict]:
    lo, hi = grader.get("range", [0, 1])
    messages = [{"role": m["role"], "content": render(m["content"], item, sample)}
                for m in flatten_messages(grader["input"])]
    instruction = OUTPUT_FORMAT.format(lo=lo, hi=hi)
    if messages[-1]["role"] == "user":
        messages[-1] = {**messages[-1], "content": f"{messages[-1]['content']}\n\n{instruction}"}
    else:
        messages.append({"role": "user", "content": instruction})
    return messages


def read_result(reply: str) -> float:
    """The `result` of the last JSON object in the reply that has one (not an inner step's object),
    or the reply itself when it is just a number."""
    decoder, value = json.JSONDecoder(), reply.strip()
    for match in re.finditer(r"\{", reply):
        try:
            obj, _ = decoder.raw_decode(reply, match.start())
        except ValueError:
            continue
        if isinstance(obj, dict) and "result" in obj:
            value = obj["result"]
    if isinstance(value, str) and re.fullmatch(NUMBER, value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"no numeric result in the grader model's reply: {reply.strip()[-200:]!r}")
    return float(value)


def verdict(grader: dict, replies: list[str] | Exception) -> RewardResult:
    if isinstance(replies, Exception):
        return failed(f"{label(grader)}: grader model: {type(replies).__name__}: {replies}")
    try:
        raw = read_result(replies[0])
    except ValueError as err:
        return failed(f"{label(grader)}: {err}")
    lo, hi = grader.get("range", [0, 1])
    score = min(max(raw, float(lo)), float(hi))
    threshold = grader.get("pass_threshold")
    return RewardResult(score, metrics={} if threshold is None else {"passed": float(score >= threshold)})


def grade_batch(grader: dict, items: list[dict], samples: list[dict]) -> list[RewardResult]:
    results: list[RewardResult | None] = [None] * len(items)
    asked, where = [], []
    for i, (item, sample) in enumerate(zip(items, samples)):
        try:
            asked.append(conversation(grader, item, sample))
            where.append(i)
        except TemplateError as err:
            results[i] = failed(f"{label(grader)}: {err}")
    replies = get_judge(judge_params(grader)).ask(asked) if asked else []
    for i, reply in zip(where, replies):
        results[i] = verdict(grader, reply)
    return results
