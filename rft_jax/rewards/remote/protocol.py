"""The wire shape of a reward endpoint, as the managed RFT services define it.

Request:  [{"id", "messages": prompt + [assistant completion], "metadata": {"reference_answer", ...}}]
          (Bedrock's layout, which our client sends), or
          [{"id", "messages": ..., "reference_answer", <the row's other fields>}]
          (the Nova reward-function pages' layout: the dataset row as it was, plus id and the completion).
          Servers accept both; a top-level field wins over the same key under metadata.
Response: [{"id", "aggregate_reward_score", "metrics_list": [{"name", "value", "type": "Reward"|"Metric"}]}]
A response item may also carry "error" (our extension) when scoring that sample failed.
Request ids are `<example id>/<position in batch>` so repeated prompts (a GRPO group)
stay distinguishable.
"""

from __future__ import annotations

from rft_jax.data.chat_text import ACCEPTED_ROLES, block_kind
from rft_jax.data.example import Example, message_text
from rft_jax.rewards.result import RewardResult, failed

ENVELOPE = ("id", "messages", "metadata")
"""Request keys that are not dataset fields; every other top-level key is one (Nova's layout)."""


def request_item(example: Example, completion: str, position: int) -> dict:
    metadata = {"reference_answer": example.reference_answer, **example.metadata}
    if example.tools is not None:
        metadata["tools"] = example.tools
    return {"id": f"{example.id}/{position}",
            "messages": example.prompt_messages + [{"role": "assistant", "content": completion}],
            "metadata": metadata}


def parse_request_item(item: dict) -> tuple[Example, str]:
    """Inverse of request_item, on the server side; raises ValueError naming the malformed field."""
    if not isinstance(item, dict):
        raise ValueError(f"a sample must be an object, got {type(item).__name__}")
    if not isinstance(item.get("messages"), list) or not item["messages"]:
        raise ValueError("messages: must be a non-empty list, the prompt then the assistant's completion")
    for i, message in enumerate(item["messages"]):
        check_message(message, f"messages[{i}]")
    messages, last = item["messages"][:-1], item["messages"][-1]
    if last.get("role") != "assistant":
        raise ValueError(f"the last message must be the assistant's completion (messages[{len(messages)}].role)")
    if item.get("id") is not None and not isinstance(item["id"], (str, int)):
        raise ValueError(f"id: must be a string or integer, got {type(item['id']).__name__}")
    metadata = item.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata: must be an object, got {type(metadata).__name__}")
    # Both layouts in one dict: the row's own top-level fields over Bedrock's nested metadata.
    fields = {**metadata, **{k: v for k, v in item.items() if k not in ENVELOPE}}
    reference = fields.pop("reference_answer", None)
    tools = fields.pop("tools", None)
    example = Example(id=str(item.get("id", "")), messages=messages, reference_answer=reference, tools=tools,
                      metadata=fields)
    return example, message_text(last)


def check_message(message: object, where: str) -> None:
    """A turn a reward can read: a known role, and content that is text (a string, text parts or null)."""
    if not isinstance(message, dict):
        raise ValueError(f"{where}: must be an object with role and content, got {type(message).__name__}")
    if message.get("role") not in ACCEPTED_ROLES:
        raise ValueError(f"{where}.role: must be one of {', '.join(ACCEPTED_ROLES)}")
    content = message.get("content")
    if isinstance(content, list):
        bad = next((j for j, part in enumerate(content) if block_kind(part) != "text"), None)
        if bad is not None:
            raise ValueError(f'{where}.content[{bad}]: must be a text part, {{"type": "text", "text": "..."}}')
    elif content is not None and not isinstance(content, str):
        raise ValueError(f"{where}.content: must be a string or a list of text parts, got {type(content).__name__}")


def response_item(item_id: str, result: RewardResult) -> dict:
    metrics = [{"name": k, "value": v, "type": "Reward"} for k, v in result.components.items()]
    metrics += [{"name": k, "value": v, "type": "Metric"} for k, v in result.metrics.items()]
    out = {"id": item_id, "aggregate_reward_score": result.score, "metrics_list": metrics}
    if result.error:
        out["error"] = result.error
    return out


def score_items(scorer, items: list) -> list[dict]:
    """Score a request body (a list of items) in one batch: one response item per request item, in order.

    A malformed item gets its own error response; the others are still scored.
    Shared by the HTTP server and the generated AWS Lambda handler."""
    parsed, out = [], [None] * len(items)
    for i, item in enumerate(items):
        try:
            parsed.append((i, *parse_request_item(item)))
        except ValueError as err:
            item_id = str(item.get("id", "")) if isinstance(item, dict) else ""
            out[i] = response_item(item_id, failed(str(err)))
    results = scorer.score_batch([p[1] for p in parsed], [p[2] for p in parsed]) if parsed else []
    for (i, example, _), result in zip(parsed, results):
        out[i] = response_item(example.id, result)
    return out


def parse_response_item(item: dict) -> RewardResult:
    try:
        score = float(item["aggregate_reward_score"])
        entries = item.get("metrics_list") or []
        components = {e["name"]: float(e["value"]) for e in entries if e.get("type") == "Reward"}
        metrics = {e["name"]: float(e["value"]) for e in entries if e.get("type") != "Reward"}
    except (KeyError, TypeError, ValueError) as err:
        return failed(f"remote: malformed response item: {err!r}")
    if item.get("error"):
        return RewardResult(0.0, components, metrics, error=f"remote: {item['error']}")
    return RewardResult(score, components, metrics)
