"""Tools in the prompt: native templates get them as they are, others the documented fallback; tool-turn text."""

from __future__ import annotations

import copy
import json

import pytest

from rft_jax.data.reasoning import PlannedChat, ReasoningConfig, plan_reasoning, render_prompt
from rft_jax.data.tool_calls import parse_tool_calls
from rft_jax.data.tool_prompt import (
    example_call,
    messages_with_tools,
    template_default_system,
    template_renders_tools,
    tool_system_text,
    tool_turn_text,
)
from rft_jax.model.registry import DEFAULT_MODEL
from rft_jax.model.tokenizer import Tokenizer, load_tokenizer

# Our own ChatML template with native tools in the style of Qwen2.5/Qwen3: the tools go into the system turn,
# assistant calls are written as <tool_call> blocks, and consecutive tool results are gathered into one user
# turn of <tool_response> blocks. `enable_thinking=false` adds an empty think block to the generation prompt.
QWEN_TOOLS = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\n\n' }}{%- endif %}"
    "{{- '# Tools\n<tools>' }}{%- for t in tools %}{{- '\n' + (t | tojson) }}{%- endfor %}"
    "{{- '\n</tools><|im_end|>\n' }}"
    "{%- elif messages[0].role == 'system' %}{{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'user' %}{{- '<|im_start|>user\n' + m.content + '<|im_end|>\n' }}"
    "{%- elif m.role == 'assistant' %}{{- '<|im_start|>assistant\n' + (m.content or '') }}"
    "{%- for c in m.tool_calls or [] %}"
    "{{- '<tool_call>\n{\"name\": \"' + c.function.name + '\", \"arguments\": ' + (c.function.arguments | tojson)"
    " + '}\n</tool_call>' }}"
    "{%- endfor %}{{- '<|im_end|>\n' }}"
    "{%- elif m.role == 'tool' %}"
    "{%- if loop.first or loop.previtem.role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\n<tool_response>\n' + m.content + '\n</tool_response>' }}"
    "{%- if loop.last or loop.nextitem.role != 'tool' %}{{- '<|im_end|>\n' }}{%- endif %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\n\n</think>\n\n' }}{%- endif %}"
    "{%- endif %}"
)
# A template that keeps only user and assistant turns: neither tools nor a system turn reach its prompt.
USER_ONLY = ("{%- for m in messages %}{%- if m.role != 'system' %}"
             "{{- '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}{%- endif %}{%- endfor %}"
             "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}")

CALC = {"type": "function", "function": {
    "name": "calculator", "description": "Evaluate an arithmetic expression.",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}
CLOCK = {"type": "function", "function": {"name": "clock", "parameters": {"type": "object", "properties": {}}}}
USER = {"role": "user", "content": "What is 123 * 45?"}
CALLED = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_0", "type": "function", "function": {"name": "calculator", "arguments": '{"expression": "123*45"}'}}]}
RESULT = {"role": "tool", "tool_call_id": "call_0", "name": "calculator", "content": "5535"}


@pytest.fixture(scope="module")
def smollm2() -> Tokenizer:
    return load_tokenizer(DEFAULT_MODEL)


def _with_template(base: Tokenizer, template: str) -> Tokenizer:
    hf = copy.deepcopy(base.hf)
    hf.chat_template = template
    return Tokenizer(hf, base.eos_ids)


@pytest.fixture(scope="module")
def qwen(smollm2) -> Tokenizer:
    return _with_template(smollm2, QWEN_TOOLS)


def _text(tokenizer, ids) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False)


def test_smollm2_template_ignores_tools_and_a_qwen_style_one_renders_them(smollm2, qwen):
    # The premise of the fallback: SmolLM2's template drops `tools` without a word.
    assert "calculator" not in smollm2.render_chat([USER], tools=[CALC])
    assert not template_renders_tools(smollm2)
    assert template_renders_tools(qwen)


def test_tool_system_text_lists_each_schema_and_the_call_form():
    text = tool_system_text([CALC, CLOCK])
    block = text.split("<tools>\n", 1)[1].split("\n</tools>", 1)[0]
    assert [json.loads(line) for line in block.splitlines()] == [CALC, CLOCK]
    # the call form is shown as a concrete call of the first tool, not placeholders a small model copies
    example = text.split("for example:\n<tool_call>\n", 1)[1].split("\n</tool_call>", 1)[0]
    call = json.loads(example)
    assert call["name"] == CALC["function"]["name"]
    assert set(call["arguments"]) == set(CALC["function"]["parameters"].get("required")
                                         or CALC["function"]["parameters"]["properties"])
    assert "<function name>" not in text


def test_example_call_names_the_tool_and_its_parameters_even_for_odd_schemas():
    assert json.loads(example_call([{"type": "function", "function": {"name": "f"}}])) == {"name": "f", "arguments": {}}
    assert json.loads(example_call([{"type": "function", "function": {
        "name": "g", "parameters": {"type": "object", "properties": {"a": {}, "b": {}}, "required": ["b"]}}}])) == {
        "name": "g", "arguments": {"b": "..."}}


def test_fallback_goes_in_front_of_the_system_prompt_or_the_template_default(smollm2):
    shown, tools = messages_with_tools(smollm2, [{"role": "system", "content": "Be exact."}, USER], [CALC])
    assert tools is None
    assert shown[0]["content"] == tool_system_text([CALC]) + "\n\nBe exact." and shown[1] == USER
    # Without a system turn SmolLM2 writes its own default one; the fallback keeps it after the tools.
    default = template_default_system(smollm2)
    assert default and default.startswith("You are a helpful AI assistant named SmolLM")
    shown, _ = messages_with_tools(smollm2, [USER], [CALC])
    assert shown[0] == {"role": "system", "content": tool_system_text([CALC]) + "\n\n" + default}


def test_fallback_writes_calls_as_hermes_blocks_and_keeps_tool_turns(smollm2):
    shown, tools = messages_with_tools(smollm2, [USER, CALLED, RESULT], [CALC])
    assert tools is None
    assistant = shown[2]
    assert "tool_calls" not in assistant and isinstance(assistant["content"], str)
    parsed = parse_tool_calls(assistant["content"])  # what the model is taught to write reads back as the call
    assert [(c.name, c.arguments) for c in parsed.calls] == [("calculator", {"expression": "123*45"})]
    assert shown[3] == RESULT
    text = smollm2.render_chat(shown, tools)
    assert text.endswith("<|im_start|>tool\n5535<|im_end|>\n<|im_start|>assistant\n")


def test_fallback_keeps_assistant_text_before_its_calls(smollm2):
    said = {**CALLED, "content": "Let me compute."}
    shown, _ = messages_with_tools(smollm2, [USER, said, RESULT], None)
    assert shown[1]["content"].startswith("Let me compute.\n<tool_call>")


def test_no_tools_and_no_tool_turns_is_untouched(smollm2):
    messages = [USER]
    assert messages_with_tools(smollm2, messages, None) == (messages, None)
    assert messages_with_tools(smollm2, messages, []) == (messages, [])


def test_native_template_gets_tools_and_calls_with_object_arguments(qwen):
    shown, tools = messages_with_tools(qwen, [USER, CALLED, RESULT], [CALC])
    assert tools == [CALC] and shown[0] == USER and shown[2] == RESULT
    assert shown[1]["tool_calls"][0]["function"]["arguments"] == {"expression": "123*45"}
    text = qwen.render_chat(shown, tools)
    assert '<tool_call>\n{"name": "calculator", "arguments": {"expression": "123*45"}}\n</tool_call>' in text
    assert "<tool_response>\n5535\n</tool_response>" in text


def test_tools_that_cannot_reach_the_prompt_raise(smollm2):
    bare = _with_template(smollm2, USER_ONLY)
    with pytest.raises(ValueError, match="neither `tools` nor a system turn"):
        messages_with_tools(bare, [USER], [CALC])


def test_tool_turn_text_smollm2(smollm2):
    assert tool_turn_text(smollm2, [{"role": "tool", "tool_call_id": "call_0", "content": "42"}]) == (
        "\n<|im_start|>tool\n42<|im_end|>\n<|im_start|>assistant\n")
    two = [{"role": "tool", "tool_call_id": "call_0", "content": "1"},
           {"role": "tool", "tool_call_id": "call_1", "content": "2"}]
    assert tool_turn_text(smollm2, two, [CALC]) == (
        "\n<|im_start|>tool\n1<|im_end|>\n<|im_start|>tool\n2<|im_end|>\n<|im_start|>assistant\n")


def test_tool_turn_text_native_qwen_style(qwen):
    one = [{"role": "tool", "tool_call_id": "call_0", "name": "calculator", "content": "42"}]
    assert tool_turn_text(qwen, one, [CALC]) == (
        "\n<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>\n<|im_start|>assistant\n")
    two = one + [{"role": "tool", "tool_call_id": "call_1", "name": "clock", "content": "noon"}]
    assert tool_turn_text(qwen, two, [CALC, CLOCK], enable_thinking=False) == (
        "\n<|im_start|>user\n<tool_response>\n42\n</tool_response>\n<tool_response>\nnoon\n</tool_response>"
        "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_tool_turn_text_continues_a_rendered_conversation(smollm2, qwen):
    """Prompt + the model's turn + its end-of-turn token + tool_turn_text is the template's own rendering of the
    conversation with the tool result, so decoding on the KV cache sees what a fresh prefill would."""
    for tok in (smollm2, qwen):
        prompt = tok.render_chat(*messages_with_tools(tok, [USER], [CALC]))
        shown, tools = messages_with_tools(tok, [USER, CALLED, RESULT], [CALC])
        full = tok.render_chat(shown, tools)
        turn = full[len(prompt):full.index("<|im_end|>", len(prompt))]  # what the model wrote
        assert parse_tool_calls(turn).calls[0].arguments == {"expression": "123*45"}
        assert full == prompt + turn + "<|im_end|>" + tool_turn_text(tok, [RESULT], [CALC])


def test_render_prompt_smollm2_with_tools_describes_them(smollm2):
    # Failing before: render_prompt handed `tools` to SmolLM2's template, which dropped them.
    text = _text(smollm2, render_prompt(smollm2, [USER], [CALC, CLOCK], None))
    assert "calculator" in text and "clock" in text and "<tool_call>" in text and "<tools>" in text
    assert text.endswith("What is 123 * 45?<|im_end|>\n<|im_start|>assistant\n")
    plan = plan_reasoning(ReasoningConfig(mode="on"), smollm2)
    thinking = _text(smollm2, render_prompt(smollm2, [USER], [CALC], plan))
    assert "calculator" in thinking and plan.instruction in thinking


def test_render_prompt_native_passes_tools_through(qwen):
    text = _text(qwen, render_prompt(qwen, [USER], [CALC], None))
    assert "# Tools\n<tools>\n" + json.dumps(CALC) in text
    assert "<tool_call></tool_call> tags" not in text  # no fallback text besides the template's own


def test_planned_chat_counts_the_tools(smollm2):
    chat = PlannedChat(smollm2, None)
    assert len(chat.apply_chat_template([USER], tools=[CALC])) > len(chat.apply_chat_template([USER])) + 50


class _IdsOnly:
    """A test double that gives ids only: tools are handed to it as they are (it cannot show its text)."""

    def __init__(self):
        self.seen = None

    def apply_chat_template(self, messages, tools=None, add_generation_prompt=True):
        self.seen = (messages, tools)
        return [1, 2, 3]


def test_tokenizer_without_text_gets_tools_as_they_are():
    tok = _IdsOnly()
    assert render_prompt(tok, [USER], [CALC], None) == [1, 2, 3]
    assert tok.seen == ([USER], [CALC])
