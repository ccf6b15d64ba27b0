"""`data convert` on Bedrock model-invocation logs and OpenAI chat-completion logs.

The records follow the shapes AWS documents for invocation logging (a ModelInvocationLog
wrapping the Converse / InvokeModel request and response bodies of Nova, Anthropic Claude and
the OpenAI-compatible gpt-oss models) and OpenAI documents for chat completions, stored
completions and Batch API input lines.
"""

import copy
import gzip
import json

import pytest

from rft_jax.cli.data import main as data_main
from rft_jax.data import load_dataset
from rft_jax.data.convert import Selection, convert_lines, convert_logs, parse_bound, parse_where

WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def bedrock_log(operation, model_id, request, response, *, when="2025-06-02T09:15:27Z", request_id="req-1",
                metadata=None):
    record = {
        "schemaType": "ModelInvocationLog", "schemaVersion": "1.0", "timestamp": when,
        "accountId": "123456789012", "identity": {"arn": "arn:aws:sts::123456789012:assumed-role/app/worker"},
        "region": "us-east-1", "requestId": request_id, "operation": operation, "modelId": model_id,
        "input": {"inputContentType": "application/json", "inputBodyJson": request, "inputTokenCount": 41},
        "output": {"outputContentType": "application/json", "outputBodyJson": response, "outputTokenCount": 9},
    }
    if metadata is not None:
        record["requestMetadata"] = metadata
    return record


def converse_output(text):
    return {"output": {"message": {"role": "assistant", "content": [{"text": text}]}}, "stopReason": "end_turn",
            "metrics": {"latencyMs": 412}, "usage": {"inputTokens": 41, "outputTokens": 9, "totalTokens": 50}}


NOVA_CONVERSE = bedrock_log("Converse", "amazon.nova-lite-v1:0", {
    "messages": [{"role": "user", "content": [{"text": "What is the weather in Lisbon?"}]}],
    "system": [{"text": "You are a weather assistant."}, {"cachePoint": {"type": "default"}}, {"text": "Be brief."}],
    "inferenceConfig": {"maxTokens": 256, "temperature": 0.2, "topP": 0.9},
    "toolConfig": {"tools": [{"toolSpec": {"name": "get_weather", "description": "Current weather for a city.",
                                           "inputSchema": {"json": WEATHER_SCHEMA}}}]},
}, converse_output("Sunny, 24 C."), metadata={"team": "search", "env": "prod"})

NOVA_INVOKE = bedrock_log("InvokeModel", "amazon.nova-micro-v1:0", {
    "schemaVersion": "messages-v1",
    "system": [{"text": "Answer with a number only."}],
    "messages": [{"role": "user", "content": [{"text": "How many sides does a hexagon have?"}]}],
    "inferenceConfig": {"maxTokens": 50, "topP": 0.1, "topK": 20, "temperature": 0.3},
}, converse_output("6"), when="2025-06-01T00:00:05Z", request_id="req-2", metadata={"team": "search"})

CLAUDE_INVOKE = bedrock_log("InvokeModel", "anthropic.claude-3-5-haiku-20241022-v1:0", {
    "anthropic_version": "bedrock-2023-05-31", "max_tokens": 512, "system": "You are a careful math tutor.",
    "messages": [{"role": "user", "content": [{"type": "text", "text": "A farmer has 3 pens of 12 cows. "},
                                              {"type": "text", "text": "How many cows?"}]}],
    "tools": [{"name": "calculator", "description": "Evaluate arithmetic.",
               "input_schema": {"type": "object", "properties": {"expression": {"type": "string"}}}}],
}, {"id": "msg_bdrk_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
    "model": "claude-3-5-haiku-20241022", "content": [{"type": "text", "text": "ANSWER: 36"}],
    "stop_reason": "end_turn", "stop_sequence": None, "usage": {"input_tokens": 30, "output_tokens": 6}},
    when="2025-06-02T23:59:00Z", request_id="req-3", metadata={"team": "tutor"})

GPT_OSS_INVOKE = bedrock_log("InvokeModel", "openai.gpt-oss-20b-1:0", {
    "messages": [{"role": "developer", "content": "You are a geography quiz bot."},
                 {"role": "user", "content": "Capital of France?"}],
    "max_completion_tokens": 150,
}, {"id": "chatcmpl-6f1c2a", "object": "chat.completion", "created": 1754400000, "model": "openai.gpt-oss-20b-1:0",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "<reasoning>The user asks for the capital of France.</reasoning>Paris"}}],
    "usage": {"prompt_tokens": 20, "completion_tokens": 12, "total_tokens": 32}},
    when="2025-05-30T12:00:00Z", request_id="req-4")

OPENAI_PAIR = {
    "request": {"model": "gpt-4o-mini", "store": True, "metadata": {"team": "support"},
                "messages": [{"role": "developer", "content": "Reply with a number."},
                             {"role": "user", "content": [{"type": "text", "text": "How many legs "},
                                                          {"type": "text", "text": "does a spider have?"}]}],
                "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}]},
    "response": {"id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", "object": "chat.completion", "created": 1748857200,
                 "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_06737a9306",
                 "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                              "message": {"role": "assistant", "content": "8", "refusal": None, "annotations": []}}],
                 "usage": {"prompt_tokens": 19, "completion_tokens": 1, "total_tokens": 20}},
}

STORED_COMPLETION = {
    "object": "chat.completion", "id": "chatcmpl-abc123", "model": "gpt-4o-2024-08-06", "created": 1738960610,
    "request_id": "req_ded8ab984ec4bf840f37566c1011c417", "metadata": {"topic": "haiku"}, "tools": None,
    "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                 "message": {"role": "assistant", "content": "Mind of circuits hum,", "tool_calls": None}}],
    "messages": {"object": "list", "first_id": "chatcmpl-abc123-0", "last_id": "chatcmpl-abc123-0",
                 "has_more": False,
                 "data": [{"id": "chatcmpl-abc123-0", "role": "user", "content": None, "name": None,
                           "content_parts": [{"type": "text", "text": "write a haiku about ai"}]}]},
}

BATCH_INPUT = {"custom_id": "request-1", "method": "POST", "url": "/v1/chat/completions",
               "body": {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "You are terse."},
                                                              {"role": "user", "content": "Hello world!"}]}}


def lines(*records):
    return [("logs.jsonl", n, json.dumps(r)) for n, r in enumerate(records, start=1)]


def convert(*records, **kwargs):
    return convert_logs(lines(*records), **kwargs)


def test_bedrock_converse_nova_record_becomes_rft_with_tools_and_provenance():
    [record] = convert(NOVA_CONVERSE).records
    assert record["messages"] == [{"role": "system", "content": "You are a weather assistant.\nBe brief."},
                                  {"role": "user", "content": "What is the weather in Lisbon?"}]
    assert record["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather for a city.", "parameters": WEATHER_SCHEMA}}]
    assert record["logged_response"] == "Sunny, 24 C." and "reference_answer" not in record
    assert (record["source_model"], record["source_id"]) == ("amazon.nova-lite-v1:0", "req-1")
    assert record["source_timestamp"] == "2025-06-02T09:15:27+00:00"
    assert (record["team"], record["env"]) == ("search", "prod")


def test_bedrock_invoke_model_bodies_of_nova_claude_and_gpt_oss():
    report = convert(NOVA_INVOKE, CLAUDE_INVOKE, GPT_OSS_INVOKE, response_as_reference=True)
    nova, claude, gpt = report.records
    assert nova["messages"] == [{"role": "system", "content": "Answer with a number only."},
                                {"role": "user", "content": "How many sides does a hexagon have?"}]
    assert nova["reference_answer"] == "6"
    assert claude["messages"] == [{"role": "system", "content": "You are a careful math tutor."},
                                  {"role": "user", "content": "A farmer has 3 pens of 12 cows. How many cows?"}]
    assert claude["reference_answer"] == "ANSWER: 36"
    assert claude["tools"][0]["function"]["name"] == "calculator"
    assert claude["tools"][0]["function"]["parameters"]["properties"] == {"expression": {"type": "string"}}
    # gpt-oss: the developer turn is the system turn, and the logged <reasoning> is not part of the answer.
    assert gpt["messages"][0] == {"role": "system", "content": "You are a geography quiz bot."}
    assert gpt["reference_answer"] == "Paris" and gpt["source_model"] == "openai.gpt-oss-20b-1:0"


def test_bedrock_stream_and_cloudwatch_event():
    streamed = copy.deepcopy(NOVA_INVOKE)
    streamed["operation"] = "ConverseStream"
    streamed["output"]["outputBodyJson"] = [
        {"messageStart": {"role": "assistant"}},
        {"contentBlockDelta": {"delta": {"text": "Six"}, "contentBlockIndex": 0}},
        {"contentBlockDelta": {"delta": {"text": " sides."}, "contentBlockIndex": 0}},
        {"contentBlockStop": {"contentBlockIndex": 0}}, {"messageStop": {"stopReason": "end_turn"}},
        {"metadata": {"usage": {"inputTokens": 12, "outputTokens": 3, "totalTokens": 15}}}]
    claude_stream = copy.deepcopy(CLAUDE_INVOKE)
    claude_stream["output"]["outputBodyJson"] = [
        {"type": "message_start", "message": {"role": "assistant"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ANSWER:"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " 36"}},
        {"type": "message_stop"}]
    cloudwatch_event = {"timestamp": 1748856927000, "ingestionTime": 1748856928000,
                        "message": json.dumps(NOVA_CONVERSE)}
    nova, claude, converse = convert(streamed, claude_stream, cloudwatch_event).records
    assert nova["logged_response"] == "Six sides." and claude["logged_response"] == "ANSWER: 36"
    assert converse["source_id"] == "req-1" and converse["team"] == "search"


def test_cloudwatch_export_lines_lose_their_timestamp(tmp_path, capsys):
    # A CloudWatch Logs export to S3 writes `<event timestamp> <message>` per line, gzipped, under
    # EXPORT_PREFIX/TASK_ID/LOG_STREAM/000000.gz.
    folder = tmp_path / "exportedlogs" / "0123abcd-task" / "aws" / "bedrock" / "modelinvocations"
    folder.mkdir(parents=True)
    with gzip.open(folder / "000000.gz", "wt") as f:
        f.write(f"2025-06-02T09:15:27.000Z {json.dumps(NOVA_CONVERSE)}\n"
                f"2025-06-01T00:00:05.123Z  {json.dumps(NOVA_INVOKE)}\n"
                "2025-06-01T00:00:06.000Z not a log record\n")
    out = tmp_path / "prompts.jsonl"
    assert data_main(["convert", str(tmp_path / "exportedlogs"), "--out", str(out)]) == 0
    assert "read 3 records: 2 converted, 1 skipped" in capsys.readouterr().out
    assert [e.metadata["source_id"] for e in load_dataset(str(out))] == ["req-1", "req-2"]
    # Only a time-stamp prefix is dropped: other text before the JSON is still not a record.
    records, skipped = convert_lines([f"June-2 {json.dumps(NOVA_INVOKE)}", f"1748856927 {json.dumps(NOVA_INVOKE)}"])
    assert records == [] and skipped == [1, 2]


def test_agent_turns_reduce_to_the_prompt_that_started_them():
    follow_up = copy.deepcopy(NOVA_CONVERSE)
    follow_up["requestId"] = "req-1b"
    follow_up["input"]["inputBodyJson"]["messages"] += [
        {"role": "assistant", "content": [{"text": "Let me check."}, {"toolUse": {
            "toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "get_weather", "input": {"city": "Lisbon"}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
                                                     "content": [{"json": {"sky": "clear", "c": 24}}]}}]}]
    report = convert(NOVA_CONVERSE, follow_up)
    assert len(report.records) == 1 and report.duplicates == 1
    # OpenAI's shape does the same: a trailing tool turn is not the prompt.
    pair = copy.deepcopy(OPENAI_PAIR)
    pair["request"]["messages"] += [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": "{\"city\": \"Lisbon\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "clear"}]
    assert convert(pair).records[0]["messages"][-1]["content"] == "How many legs does a spider have?"


def test_unconvertible_bedrock_records_are_skipped_with_the_reason():
    in_s3 = copy.deepcopy(NOVA_CONVERSE)
    del in_s3["input"]["inputBodyJson"]
    in_s3["input"]["inputBodyS3Path"] = "s3://logs/AWSLogs/123456789012/BedrockModelInvocationLogs/data/req-1.json"
    image = copy.deepcopy(NOVA_CONVERSE)
    image["input"]["inputBodyJson"]["messages"][0]["content"].append(
        {"image": {"format": "png", "source": {"s3Location": {"uri": "s3://bucket/cat.png"}}}})
    titan = bedrock_log("InvokeModel", "amazon.titan-text-express-v1",
                        {"inputText": "Hello", "textGenerationConfig": {"maxTokenCount": 50}}, {"results": []})
    odd_output = copy.deepcopy(GPT_OSS_INVOKE)
    odd_output["output"]["outputBodyJson"]["choices"] = ["not a choice object"]
    report = convert(in_s3, image, titan, odd_output, NOVA_INVOKE)
    assert report.read == 5 and len(report.records) == 1
    reasons = {number: why for _, number, why in report.skipped}
    assert "s3://logs/" in reasons[1] and "inputBodyJson" in reasons[1]
    assert "'image' block" in reasons[2]
    assert "no messages" in reasons[3] and "inputText" in reasons[3]
    assert reasons[4].startswith("unexpected structure (AttributeError")


def test_openai_request_response_stored_completion_and_batch_input():
    pair, stored, batch = convert(OPENAI_PAIR, STORED_COMPLETION, BATCH_INPUT).records
    assert pair["messages"] == [{"role": "system", "content": "Reply with a number."},
                                {"role": "user", "content": "How many legs does a spider have?"}]
    assert pair["tools"] == OPENAI_PAIR["request"]["tools"] and pair["logged_response"] == "8"
    assert pair["source_model"] == "gpt-4o-mini-2024-07-18" and pair["team"] == "support"
    assert pair["source_id"] == "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT"
    assert pair["source_timestamp"] == "2025-06-02T09:40:00+00:00"
    assert stored["messages"] == [{"role": "user", "content": "write a haiku about ai"}]
    assert stored["logged_response"] == "Mind of circuits hum," and stored["topic"] == "haiku"
    assert batch["source_id"] == "request-1" and "logged_response" not in batch


def test_selection_by_model_metadata_and_date():
    records = [NOVA_CONVERSE, NOVA_INVOKE, CLAUDE_INVOKE, GPT_OSS_INVOKE, OPENAI_PAIR]
    models = [r["source_model"] for r in convert(*records, selection=Selection(models=("amazon.nova-*",))).records]
    assert models == ["amazon.nova-lite-v1:0", "amazon.nova-micro-v1:0"]
    by_team = convert(*records, selection=Selection(where=parse_where(["team=search", "env=prod"])))
    assert [r["source_id"] for r in by_team.records] == ["req-1"] and by_team.filtered == {"metadata": 4}
    june_2 = Selection(since=parse_bound("2025-06-02", end=False), until=parse_bound("2025-06-02", end=True))
    dated = convert(*records, selection=june_2)  # a bare --until date includes that whole day
    assert [r["source_id"] for r in dated.records] == ["req-1", "req-3", "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT"]
    assert dated.filtered == {"date": 2}
    early = Selection(until=parse_bound("2025-06-01T00:00:04Z", end=True))
    assert [r["source_id"] for r in convert(*records, selection=early).records] == ["req-4"]
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_where(["team"])
    with pytest.raises(ValueError, match="ISO date"):
        parse_bound("June 2nd", end=False)


def test_generic_shape_still_converts_and_reports_line_numbers():
    logs = [json.dumps({"messages": [{"role": "user", "content": "capital of France?"}], "response": "Paris"}),
            "", "garbage", json.dumps([1, 2])]
    records, skipped = convert_lines(logs)
    assert records[0]["logged_response"] == "Paris" and skipped == [3, 4]


def test_cli_converts_a_bedrock_log_folder_and_openai_logs_with_filters(tmp_path, capsys):
    folder = tmp_path / "AWSLogs" / "123456789012" / "BedrockModelInvocationLogs" / "us-east-1" / "2025" / "06"
    folder.mkdir(parents=True)
    bedrock = [NOVA_CONVERSE, NOVA_INVOKE, CLAUDE_INVOKE, GPT_OSS_INVOKE, NOVA_CONVERSE]
    with gzip.open(folder / "20250602T0915Z_a1b2c3.json.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in bedrock) + "\nnot json\n")
    out = tmp_path / "prompts.jsonl"
    argv = ["convert", str(tmp_path / "AWSLogs"), "--out", str(out), "--model", "amazon.nova-*",
            "--model", "anthropic.*", "--where", "team=search", "--since", "2025-06-01", "--until", "2025-06-02"]
    assert data_main(argv) == 0
    printed = capsys.readouterr().out
    assert ("read 6 records: 2 converted, 1 skipped, 2 filtered out (metadata: 1, model: 1), "
            "1 duplicate prompts removed") in printed
    assert "skipped line 6: not JSON" in printed
    examples = load_dataset(str(out))
    assert [e.metadata["source_id"] for e in examples] == ["req-1", "req-2"]
    assert examples[0].tools[0]["function"]["name"] == "get_weather"

    logs = tmp_path / "chat.jsonl"
    logs.write_text("\n".join(json.dumps(r) for r in (OPENAI_PAIR, STORED_COMPLETION, BATCH_INPUT)))
    assert data_main(["convert", str(logs), "--out", str(out), "--response-as-reference"]) == 0
    assert [e.reference_answer for e in load_dataset(str(out))] == ["8", "Mind of circuits hum,", None]


def test_cli_fails_when_nothing_converts_and_help_names_the_filters(tmp_path, capsys):
    logs = tmp_path / "bad.jsonl"
    logs.write_text("nope\n")
    assert data_main(["convert", str(logs), "--out", str(tmp_path / "o.jsonl")]) == 1
    assert "skipped line 1: not JSON" in capsys.readouterr().out
    assert data_main(["convert", str(logs), "--out", str(tmp_path / "o.jsonl"), "--since", "yesterday"]) == 1
    assert "not an ISO date" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        data_main(["convert", "--help"])
    help_text = capsys.readouterr().out
    assert all(flag in help_text for flag in ("--model", "--where", "--since", "--until", "(repeatable)"))
