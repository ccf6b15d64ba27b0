"""The wire shape of a reward endpoint, as the managed RFT services define it.

Request:  [{"id", "messages": prompt + [assistant completion], "metadata": {"reference_answer", ...}}]
Response: [{"id", "aggregate_reward_score", "metrics_list": [{"name", "value", "type": "Reward"|"Metric"}]}]
A response item may also carry "error" (our extension) when scoring that sample failed.
Request ids are `<example id>/<position in batch>` so repeated prompts (a GRPO group)
stay distinguishable.
"""

from __future__ import annotations

from rft_jax.data.example import Example, message_text
from rft_jax.rewards.result import RewardResult, failed


def request_item(example: Example, completion: str, position: int) -> dict:
    metadata = {"reference_answer": example.reference_answer, **example.metadata}
    if example.tools is not None:
        metadata["tools"] = example.tools
    return {"id": f"{example.id}/{position}",
            "messages": example.prompt_messages + [{"role": "assistant", "content": completion}],
            "metadata": metadata}


def parse_request_item(item: dict) -> tuple[Example, str]:
    """Inverse of request_item, on the server side; raises ValueError on a malformed item."""
    if not isinstance(item, dict) or not isinstance(item.get("messages"), list) or not item["messages"]:
        raise ValueError("each item needs a non-empty 'messages' list")
    messages, last = item["messages"][:-1], item["messages"][-1]
    if not isinstance(last, dict) or last.get("role") != "assistant":
        raise ValueError("the last message must be the assistant's completion")
    metadata = dict(item.get("metadata") or {})
    reference = metadata.pop("reference_answer", None)
    tools = metadata.pop("tools", None)
    example = Example(id=str(item.get("id", "")), messages=messages, reference_answer=reference, tools=tools,
                      metadata=metadata)
    return example, message_text(last)


def response_item(item_id: str, result: RewardResult) -> dict:
    metrics = [{"name": k, "value": v, "type": "Reward"} for k, v in result.components.items()]
    metrics += [{"name": k, "value": v, "type": "Metric"} for k, v in result.metrics.items()]
    out = {"id": item_id, "aggregate_reward_score": result.score, "metrics_list": metrics}
    if result.error:
        out["error"] = result.error
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
