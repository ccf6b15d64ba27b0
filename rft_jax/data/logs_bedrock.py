"""Amazon Bedrock model-invocation logs -> LoggedCall.

With invocation logging on, Bedrock writes one JSON object per call to S3 or CloudWatch Logs:
  {"schemaType": "ModelInvocationLog", "timestamp", "requestId", "operation", "modelId",
   "input": {"inputBodyJson": <request body>}, "output": {"outputBodyJson": <response body>},
   "requestMetadata"?: {tags the caller set}}
The bodies are in the invoked API's own shape, so three request shapes are read:
  Converse, and Nova through InvokeModel: `system` blocks, `messages` with [{"text": ...}] content,
    `toolConfig.tools[].toolSpec`; response `output.message.content`
  Anthropic through InvokeModel: `anthropic_version`, `system` string or blocks, typed content
    blocks, `tools[].input_schema`; response `content` blocks
  OpenAI-compatible InvokeModel (gpt-oss): `messages` with role/content, `tools`; response `choices`
Streaming calls log a list of events as the response; their text deltas are joined.
"""

from __future__ import annotations

import json
import re
from typing import Any

from rft_jax.data.chat_text import UnusableRecord, flatten_content, prompt_turns
from rft_jax.data.logged_call import LoggedCall, parse_time

# gpt-oss through InvokeModel puts its reasoning, in these tags, before the answer.
_REASONING = re.compile(r"^\s*<reasoning>.*?</reasoning>\s*", re.S)


def is_bedrock_log(record: dict) -> bool:
    return record.get("schemaType") == "ModelInvocationLog" or (
        "modelId" in record and isinstance(record.get("input"), dict))


def bedrock_call(record: dict) -> LoggedCall:
    request = request_body(record)
    output = record.get("output") if isinstance(record.get("output"), dict) else {}
    metadata = record.get("requestMetadata")
    return LoggedCall(
        messages=prompt_turns(request["messages"], system=flatten_content(request.get("system"), "system", "\n")),
        tools=tool_schemas(request) or None,
        response=response_text(output.get("outputBodyJson")),
        model=record.get("modelId"),
        request_id=record.get("requestId"),
        timestamp=parse_time(record.get("timestamp")),
        metadata=dict(metadata) if isinstance(metadata, dict) else {},
    )


def request_body(record: dict) -> dict:
    """The logged request body; a body Bedrock moved to S3 (over 100 KB) cannot be read offline."""
    logged = record["input"]
    body = logged.get("inputBodyJson")
    if isinstance(body, str):  # some exporters keep the body as JSON text
        try:
            body = json.loads(body)
        except json.JSONDecodeError:
            raise UnusableRecord("input.inputBodyJson is text that is not JSON") from None
    if body is None and logged.get("inputBodyS3Path"):
        raise UnusableRecord(f"the request body was stored in S3 ({logged['inputBodyS3Path']}): "
                             "download it into input.inputBodyJson to convert this record")
    if not isinstance(body, dict):
        raise UnusableRecord("the record has no input.inputBodyJson request body")
    if "messages" not in body:
        raise UnusableRecord(f"the request body has no messages (keys: {', '.join(sorted(body))}); "
                             "only chat requests convert")
    return body


def function_schema(name: Any, description: Any, parameters: Any) -> dict | None:
    """An OpenAI function tool, the form RFT JSONL and chat templates take."""
    if isinstance(parameters, str):
        try:
            parameters = json.loads(parameters)
        except json.JSONDecodeError:
            return None
    if not isinstance(name, str) or not isinstance(parameters, (dict, type(None))):
        return None
    function = {"name": name, "parameters": parameters or {"type": "object", "properties": {}}}
    if description:
        function["description"] = description
    return {"type": "function", "function": function}


def tool_schemas(request: dict) -> list[dict]:
    """Converse `toolSpec`s, Anthropic tools and OpenAI tools as OpenAI function schemas. Tools
    without a JSON schema (Anthropic's server tools such as computer use) have no function form."""
    tools = []
    config = request.get("toolConfig")
    for tool in config.get("tools", []) if isinstance(config, dict) else []:
        spec = tool.get("toolSpec") if isinstance(tool, dict) else None
        if isinstance(spec, dict):
            schema = spec.get("inputSchema")
            tools.append(function_schema(spec.get("name"), spec.get("description"),
                                         schema.get("json") if isinstance(schema, dict) else None))
    for tool in request.get("tools") or []:
        if not isinstance(tool, dict):
            continue
        if tool.get("type") == "function" and isinstance(tool.get("function"), dict):
            tools.append(tool)
        elif "input_schema" in tool:
            tools.append(function_schema(tool.get("name"), tool.get("description"), tool["input_schema"]))
    return [tool for tool in tools if tool is not None]


def response_text(body: Any) -> str | None:
    """The answer's text blocks joined, ignoring tool calls and reasoning; None when there is no text."""
    if isinstance(body, list):
        return stream_text(body)
    if not isinstance(body, dict):
        return None
    if isinstance(body.get("output"), dict):  # Converse and Nova
        return flatten_content((body["output"].get("message") or {}).get("content"), strict=False) or None
    if isinstance(body.get("content"), list):  # Anthropic
        return flatten_content(body["content"], strict=False) or None
    if body.get("choices"):  # OpenAI-compatible
        text = flatten_content((body["choices"][0].get("message") or {}).get("content"), strict=False)
        return _REASONING.sub("", text) or None
    return None


def stream_text(events: list) -> str | None:
    """The answer of a streamed call: the text deltas of Converse, Anthropic or OpenAI stream events."""
    texts = []
    for event in events:
        if not isinstance(event, dict):
            continue
        delta = (event.get("contentBlockDelta") or {}).get("delta") or {}  # ConverseStream, Nova
        if event.get("type") == "content_block_delta":  # Anthropic
            delta = event.get("delta") or {}
        if event.get("choices"):  # OpenAI-compatible
            delta = {"text": (event["choices"][0].get("delta") or {}).get("content")}
        if isinstance(delta.get("text"), str):
            texts.append(delta["text"])
    return _REASONING.sub("", "".join(texts)) if texts else None
