"""OpenAI chat-completion logs (and the simple generic shape) -> LoggedCall.

Accepted records, one JSON object a line:
  request and response:  {"request": {"model", "messages", "tools"?, "metadata"?}, "response": <chat.completion>}
  generic:               {"messages": [...], "response": "text" | {"content": ...} | <chat.completion>}
  stored completion:     a `chat.completion` object (GET /chat/completions/{id}: "id", "model", "created",
                         "metadata", "choices") with "messages" holding its request messages, as a list
                         or as the list object GET /chat/completions/{id}/messages returns
  Batch API input line:  {"custom_id", "method", "url", "body": {"model", "messages", ...}} (prompts only)
Any of them may also carry top-level "id", "model", "metadata" and "timestamp".
"""

from __future__ import annotations

from typing import Any

from rft_jax.data.chat_text import flatten_content, prompt_turns
from rft_jax.data.logged_call import LoggedCall, parse_time


def openai_call(record: dict) -> LoggedCall:
    request, response = request_and_response(record)
    reply = response if isinstance(response, dict) else {}
    metadata = {}
    for source in (reply, request, record):  # the record's own tags win
        if isinstance(source.get("metadata"), dict):
            metadata.update(source["metadata"])
    return LoggedCall(
        messages=prompt_turns(request_messages(request.get("messages"))),
        tools=request.get("tools") or None,
        response=response_text(response),
        model=reply.get("model") or request.get("model") or record.get("model"),  # the response names the snapshot
        request_id=record.get("id") or reply.get("id") or record.get("custom_id"),
        timestamp=parse_time(record.get("timestamp") or reply.get("created") or record.get("created")),
        metadata=metadata,
    )


def request_and_response(record: dict) -> tuple[dict, Any]:
    if isinstance(record.get("request"), dict):
        return record["request"], record.get("response")
    if isinstance(record.get("body"), dict):  # a Batch API input line: the prompt without an answer
        return record["body"], None
    if record.get("object") == "chat.completion":  # a stored completion: request and response in one object
        return record, record
    return record, record.get("response")


def request_messages(messages: Any) -> Any:
    """Messages as a list; a stored completion's list object becomes its `data`, each message's
    `content_parts` standing in for a null `content`."""
    if not (isinstance(messages, dict) and messages.get("object") == "list"):
        return messages
    out = []
    for message in messages.get("data") or []:
        if not isinstance(message, dict):
            out.append(message)
            continue
        turn = {k: v for k, v in message.items() if k not in ("id", "content_parts")}
        if turn.get("content") is None and message.get("content_parts"):
            turn["content"] = message["content_parts"]
        out.append(turn)
    return out


def response_text(response: Any) -> str | None:
    """The answer text of a chat.completion, a message, a Batch API result or a plain string."""
    if response is None or isinstance(response, str):
        return response
    if not isinstance(response, dict):
        return None
    if isinstance(response.get("body"), dict):  # Batch API output: {"status_code", "body": <chat.completion>}
        return response_text(response["body"])
    if response.get("choices"):
        choice = response["choices"][0]
        return response_text(choice.get("message") if isinstance(choice.get("message"), dict) else choice.get("text"))
    content = response.get("content")
    if isinstance(content, list):
        return flatten_content(content, strict=False) or None  # text parts; refusals and audio are not text
    if isinstance(content, str):
        return content
    return response["output_text"] if isinstance(response.get("output_text"), str) else None
