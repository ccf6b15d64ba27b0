"""Tool calls parsed from model text (hermes and llama3 formats); malformed calls become errors, never raise."""

import json

import pytest

from rft_jax.data.tool_calls import (
    ParsedTurn,
    ToolCall,
    call_opening,
    hermes_call_text,
    parse_tool_calls,
    tool_format,
)


def test_hermes_several_calls_with_text_around():
    text = ('Let me work it out.\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "123*45"}}\n'
            '</tool_call>\n<tool_call>{"name": "lookup", "arguments": {"key": "x", "n": 2}}</tool_call>\nDone.')
    turn = parse_tool_calls(text)
    assert turn.content == "Let me work it out.\n\n\nDone."
    assert turn.calls == (ToolCall("calculator", {"expression": "123*45"}, "call_0"),
                          ToolCall("lookup", {"key": "x", "n": 2}, "call_1"))
    assert turn.errors == ()


def test_hermes_arguments_as_json_string_and_model_given_id():
    text = '<tool_call>{"id": "abc", "name": "f", "arguments": "{\\"a\\": [1, 2]}"}</tool_call>'
    turn = parse_tool_calls(text)
    assert turn.calls == (ToolCall("f", {"a": [1, 2]}, "abc"),)
    assert turn.content == ""


def test_no_calls_is_plain_content():
    turn = parse_tool_calls("  The answer is 5535.  ")
    assert turn == ParsedTurn("The answer is 5535.", (), ())


def test_call_without_arguments_has_empty_object():
    assert parse_tool_calls('<tool_call>{"name": "now"}</tool_call>').calls == (ToolCall("now", {}, "call_0"),)


@pytest.mark.parametrize("body, says", [
    ("{name: calculator}", "not valid JSON"),
    ('{"arguments": {"x": 1}}', 'no "name"'),
    ('{"name": "", "arguments": {}}', 'no "name"'),
    ('{"name": "f", "arguments": [1, 2]}', "must be a JSON object"),
    ('{"name": "f", "arguments": "not json"}', "must be a JSON object"),
    ('["f", {}]', "not an object"),
])
def test_hermes_malformed_calls_become_errors(body, says):
    turn = parse_tool_calls(f"before <tool_call>{body}</tool_call> after")
    assert turn.calls == ()
    assert len(turn.errors) == 1 and says in turn.errors[0]
    assert '<tool_call>{"name": "<tool name>", "arguments"' in turn.errors[0]  # tells the expected form
    assert turn.content == "before  after"


def test_hermes_unclosed_tag_and_good_call_before_it():
    turn = parse_tool_calls('<tool_call>{"name": "a", "arguments": {}}</tool_call> then <tool_call>{"name": "b"')
    assert [c.name for c in turn.calls] == ["a"]
    assert len(turn.errors) == 1 and "never closed" in turn.errors[0]
    assert turn.content == "then"  # the unclosed call's text is not content


def test_hermes_stray_closing_tag_is_an_error():
    turn = parse_tool_calls("oops</tool_call> text")
    assert turn.calls == () and "without an opening" in turn.errors[0]


def test_to_openai_round_trips_arguments():
    call = ToolCall("calc", {"expression": "2 × 3"}, "call_0")
    wire = call.to_openai()
    assert wire["id"] == "call_0" and wire["type"] == "function" and wire["function"]["name"] == "calc"
    assert json.loads(wire["function"]["arguments"]) == {"expression": "2 × 3"}
    message = ParsedTurn("hi", (call,), ()).to_message()
    assert message["role"] == "assistant" and message["tool_calls"] == [wire]
    assert "tool_calls" not in ParsedTurn("hi").to_message()


def test_hermes_call_text_parses_back():
    text = hermes_call_text("calc", {"expression": "7*8"})
    assert parse_tool_calls(text).calls == (ToolCall("calc", {"expression": "7*8"}, "call_0"),)
    assert parse_tool_calls(hermes_call_text("calc", '{"expression": "1"}')).calls[0].arguments == {"expression": "1"}


def test_llama3_python_tag_and_several_calls():
    text = '<|python_tag|>{"name": "a", "parameters": {"s": "x;y"}}; {"name": "b", "parameters": {}}'
    turn = parse_tool_calls(text, "llama3")
    assert turn.calls == (ToolCall("a", {"s": "x;y"}, "call_0"), ToolCall("b", {}, "call_1"))
    assert turn.content == "" and turn.errors == ()


def test_llama3_bare_json_call_and_arguments_key():
    turn = parse_tool_calls(' {"name": "calc", "arguments": {"expression": "1+1"}}\n', "llama3")
    assert turn.calls == (ToolCall("calc", {"expression": "1+1"}, "call_0"),)


def test_llama3_plain_text_and_plain_json_answer_are_content():
    assert parse_tool_calls("It is 42.", "llama3") == ParsedTurn("It is 42.")
    assert parse_tool_calls('{"answer": 42}', "llama3") == ParsedTurn('{"answer": 42}')


@pytest.mark.parametrize("text, says", [
    ('{"name": "a", "parameters": {"x": 1}', "not valid JSON"),
    ('<|python_tag|>{"parameters": {}}', 'no "name"'),
    ('<|python_tag|>{"name": "a", "parameters": 3}', "must be a JSON object"),
    ('{"name": "a", "parameters": {}} and more', "Unexpected text"),
    ("<|python_tag|>print(1)", "not valid JSON"),
])
def test_llama3_malformed(text, says):
    turn = parse_tool_calls(text, "llama3")
    assert turn.errors and says in turn.errors[-1]
    assert '"parameters"' in turn.errors[-1]


@pytest.mark.parametrize("fmt", ["hermes", "llama3"])
@pytest.mark.parametrize("text", ["", "<tool_call>", "</tool_call>", "{", "<|python_tag|>", '{"name": 1}', "\x00{]}",
                                  '<tool_call>{"name": "a", "arguments": {}}</tool_call>' * 3])
def test_never_raises(fmt, text):
    assert isinstance(parse_tool_calls(text, fmt), ParsedTurn)


class _Tok:
    def __init__(self, template):
        self.hf = type("HF", (), {"chat_template": template})()


def test_tool_format_from_template():
    assert tool_format(_Tok("{{ '<|start_header_id|>ipython<|end_header_id|>' }}")) == "llama3"
    assert tool_format(_Tok("{{- '<|python_tag|>' }}")) == "llama3"
    assert tool_format(_Tok("{{ '<tool_call>' }}")) == "hermes"
    assert tool_format(_Tok(None)) == "hermes"
    assert tool_format(object()) == "hermes"


def test_call_opening():
    assert call_opening("hermes") == "<tool_call>"
    assert call_opening("llama3") == "{"
