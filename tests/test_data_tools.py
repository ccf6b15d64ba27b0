"""`data validate` on tools: schema checks, conversations holding tool turns as prompts, and prompt lengths."""

from __future__ import annotations

import copy
import json

import pytest

from rft_jax.cli.data import main as data_main
from rft_jax.data import validate_lines
from rft_jax.data.example import Example, flatten_messages, prompt_key, prompt_messages
from rft_jax.model.registry import DEFAULT_MODEL
from rft_jax.model.tokenizer import Tokenizer, load_tokenizer

USER = {"role": "user", "content": "What is 123 * 45?"}
CALC = {"type": "function", "function": {
    "name": "calculator", "description": "Evaluate an arithmetic expression.",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}


def call(id_="call_0", args='{"expression": "123*45"}', name="calculator"):
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": args}}


CALLED = {"role": "assistant", "content": None, "tool_calls": [call()]}
RESULT = {"role": "tool", "tool_call_id": "call_0", "content": "5535"}


def line(**record) -> str:
    return json.dumps({"reference_answer": "5535", **record})


def problems(*records: str, **kwargs) -> list[tuple[int, str, str]]:
    return [(p.line, p.field, p.problem) for p in validate_lines(list(records), **kwargs).problems]


def fields(*records: str) -> list[str]:
    return [f for _, f, _ in problems(*records)]


def tool(name="calculator", parameters=None, **fn):
    return {"type": "function", "function": {"name": name, **fn,
                                             **({} if parameters is None else {"parameters": parameters})}}


# --- tool schemas -------------------------------------------------------------------------------------------------


def test_valid_tools_pass():
    assert problems(line(messages=[USER], tools=[CALC, tool("clock"), tool("get-time_2", {"type": "object"})])) == []


@pytest.mark.parametrize("tools, field, says", [
    ([{"type": "code_interpreter", "function": CALC["function"]}], "tools[0].type", 'must be "function"'),
    ([{"type": "function"}], "tools[0].function", "missing"),
    ([tool("get weather")], "tools[0].function.name", "not a valid function name"),
    ([tool("9lives")], "tools[0].function.name", "not a valid function name"),
    ([tool("x" * 65)], "tools[0].function.name", "not a valid function name"),
    ([tool(None)], "tools[0].function.name", "not a valid function name"),
    ([CALC, tool("calculator")], "tools[1].function.name", "duplicate name 'calculator' (also tools[0])"),
    ([CALC, tool("f", ["x"])], "tools[1].function.parameters", "must be a JSON Schema object"),
    ([tool("f", {"type": "string"})], "tools[0].function.parameters", "arguments are an object"),
    ([tool("f", {"type": "object", "properties": {"x": {"type": "strng"}}})],
     "tools[0].function.parameters.properties.x.type", "not a valid JSON Schema"),
    ([tool("f", {"type": "object", "required": "x"})], "tools[0].function.parameters.required",
     "not a valid JSON Schema"),
    ([tool("f", description=3)], "tools[0].function.description", "must be a string"),
    ({"name": "calculator"}, "tools", "must be a list"),
    (["calculator"], "tools[0]", "must be an object"),
])
def test_bad_tool_schemas_name_the_field(tools, field, says):
    found = problems(line(messages=[USER]), line(messages=[{"role": "user", "content": "2+2?"}], tools=tools))
    assert [(n, f) for n, f, _ in found] == [(2, field)]
    assert says in found[0][2]


def test_cli_validate_reports_line_field_and_fix(tmp_path, capsys):
    path = tmp_path / "data.jsonl"
    path.write_text(line(messages=[USER], tools=[CALC]) + "\n"
                    + line(messages=[{"role": "user", "content": "hi"}],
                           tools=[CALC, tool("f", {"type": "object", "properties": {"x": {"type": 5}}})]) + "\n")
    assert data_main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:2: tools[1].function.parameters.properties.x.type: not a valid JSON Schema" in out
    assert "-> fix the schema" in out


# --- conversations that already hold tool turns -------------------------------------------------------------------


def test_conversation_ending_in_a_tool_result_is_a_prompt_continued_by_the_model():
    record = line(messages=[{"role": "system", "content": "Use the calculator."}, USER, CALLED, RESULT], tools=[CALC])
    result = validate_lines([record])
    assert result.problems == []
    # Failing before: the prompt stopped at the last user turn and the tool exchange was dropped.
    assert result.examples[0].prompt_messages[-2:] == [CALLED, RESULT]


def test_reference_reply_after_the_tool_turns_is_not_in_the_prompt():
    final = {"role": "assistant", "content": "5535"}
    assert prompt_messages([USER, CALLED, RESULT, final]) == [USER, CALLED, RESULT]
    assert prompt_messages([USER, final]) == [USER]
    assert Example("e", [USER, CALLED, RESULT, final]).prompt_messages == [USER, CALLED, RESULT]


def test_assistant_calls_with_absent_content_and_several_results():
    called = {"role": "assistant", "tool_calls": [call("a"), call("b", {"expression": "1"})]}
    results = [{"role": "tool", "tool_call_id": "a", "content": "5535"}, {"role": "tool", "tool_call_id": "b",
                                                                          "content": ""}]
    assert problems(line(messages=[USER, called, *results])) == []


@pytest.mark.parametrize("messages, field, says", [
    ([USER, {**CALLED, "tool_calls": [call(args="{not json")]}, RESULT],
     "messages[1].tool_calls[0].function.arguments", "not valid JSON"),
    ([USER, {**CALLED, "tool_calls": [call(args="[1]")]}, RESULT], "messages[1].tool_calls[0].function.arguments",
     "must be a JSON object"),
    ([USER, {**CALLED, "tool_calls": [{"id": "call_0", "function": {"arguments": "{}"}}]}, RESULT],
     "messages[1].tool_calls[0]", "not a function call with a name"),
    ([USER, {**CALLED, "tool_calls": []}, RESULT], "messages[1].tool_calls", "non-empty list"),
    ([{**USER, "tool_calls": [call()]}], "messages[0].tool_calls", "cannot carry tool_calls"),
    ([USER, CALLED, {**RESULT, "tool_call_id": "call_9"}], "messages[2].tool_call_id",
     "'call_9' is not among messages[1]'s call ids"),
    ([USER, CALLED, {**RESULT, "tool_call_id": 3}], "messages[2].tool_call_id", "must be a string"),
    ([USER, RESULT], "messages[1].role", "not answering an assistant tool call"),
])
def test_malformed_tool_turns(messages, field, says):
    found = problems(line(messages=messages))
    assert [f for _, f, _ in found] == [field] and says in found[0][2]


def test_flatten_messages_keeps_tool_calls_and_null_content_becomes_empty():
    flat = flatten_messages([USER, CALLED, {**RESULT, "content": [{"type": "text", "text": "55"}, {"text": "35"}]}])
    assert flat[1] == {"role": "assistant", "content": "", "tool_calls": [call()]}
    assert flat[2] == {"role": "tool", "tool_call_id": "call_0", "content": "5535"}


def test_prompt_key_tells_tool_calls_apart():
    other = {**CALLED, "tool_calls": [call(args='{"expression": "999"}')]}
    assert prompt_key([USER, CALLED, RESULT]) != prompt_key([USER, other, RESULT])
    as_object = {**CALLED, "tool_calls": [call(args={"expression": "123*45"})]}
    assert prompt_key([USER, CALLED, RESULT]) == prompt_key([USER, as_object, RESULT])
    assert prompt_key([USER]) == prompt_key([USER, {"role": "assistant", "content": "x"}])


# --- prompt lengths as training renders them ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2() -> Tokenizer:
    return load_tokenizer(DEFAULT_MODEL)


def test_prompt_lengths_count_the_fallback_tool_description(smollm2):
    # Failing before: SmolLM2's template dropped `tools`, so a prompt with tools counted as one without.
    result = validate_lines([line(messages=[USER]), line(id="t", messages=[USER], tools=[CALC])], tokenizer=smollm2,
                            allow_duplicate_prompts=True)
    plain, with_tools = result.prompt_tokens
    assert with_tools > plain + 50
    too_long = validate_lines([line(messages=[USER], tools=[CALC])], tokenizer=smollm2, max_prompt_tokens=plain + 5)
    assert [p.field for p in too_long.errors] == ["messages"]


def test_prompt_with_tool_turns_renders_them(smollm2):
    result = validate_lines([line(messages=[USER, CALLED, RESULT], tools=[CALC])], tokenizer=smollm2)
    assert result.problems == []
    shorter = validate_lines([line(messages=[USER], tools=[CALC])], tokenizer=smollm2)
    assert result.prompt_tokens[0] > shorter.prompt_tokens[0] + 10  # the call and its result are in the prompt


def test_tools_the_template_cannot_show_are_a_problem(smollm2):
    hf = copy.deepcopy(smollm2.hf)
    hf.chat_template = ("{%- for m in messages %}{%- if m.role == 'user' %}{{- m.content }}{%- endif %}"
                        "{%- endfor %}")
    bare = Tokenizer(hf, smollm2.eos_ids)
    result = validate_lines([line(messages=[USER], tools=[CALC]), line(messages=[{"role": "user", "content": "x"}])],
                            tokenizer=bare)
    assert [(p.line, p.field) for p in result.errors] == [(1, "tools")]
    assert "would not reach the prompt" in result.errors[0].problem
