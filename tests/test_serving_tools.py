"""Tool calls from the OpenAI-compatible server: `tool_calls` in completions and in streams, and the client's loop.

The model's text is scripted by `ReplyEngine`, which stands in for the engine
and writes a chosen reply for each prompt token by token through the real
tokenizer, detokenizer, bridge, HTTP layer and `openai` client (a tool call
repeats tokens, which the Markov-chain scripted model of test_serving_support.py
cannot write). One test runs the real engine and tiny model with tools. The
tokenizer is SmolLM2's, whose template has no tool format: its prompts get the
fallback (tools described in the system turn, calls in Hermes tags).
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import openai
import pytest
from test_serving_support import scripted_model, smollm2_tokenizer

from rft_jax.data.reasoning import ReasoningConfig, plan_reasoning
from rft_jax.data.tool_calls import parse_tool_calls
from rft_jax.data.tool_prompt import messages_with_tools, tool_system_text
from rft_jax.serving import BackgroundServer, Engine, EngineConfig, make_app
from rft_jax.serving.protocol import RequestError, parse_chat_request

MODEL = "scripted"
ADD = {"type": "function", "function": {
    "name": "add", "description": "Add two integers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "required": ["a", "b"]}}}
MESSAGES = [{"role": "user", "content": "What is two plus five?"}]
CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 5}}\n</tool_call>'
RESULT, FINAL = '{"sum": 7}', "Two plus five is 7."


class ReplyEngine:
    """The engine's interface (`submit`, `eos_ids`, `config`), answering each prompt with `reply(prompt text)`."""

    def __init__(self, tokenizer, max_context: int = 2048):
        self.tok, self.eos_ids = tokenizer, frozenset(tokenizer.eos_ids)
        self.config = EngineConfig(slots=4, max_context=max_context)
        self.busy = self.steps = 0
        self.reply = lambda prompt: FINAL
        self.prompts: list[list[int]] = []

    def submit(self, request) -> None:
        self.prompts.append(list(request.prompt_ids))
        ids = self.tok.encode(self.reply(self.tok.decode(request.prompt_ids, skip_special_tokens=False)))
        ids.append(self.tok.eos_ids[-1])

        def run():
            for n, token in enumerate(ids, 1):
                request.emit(token, None)
                if token in self.eos_ids:
                    return request.emit(None, "stop")
                if n >= request.max_tokens or request.cancelled:
                    return request.emit(None, "length" if n >= request.max_tokens else "cancelled")
        threading.Thread(target=run, daemon=True).start()


@pytest.fixture(scope="module")
def served():
    tok = smollm2_tokenizer()
    engine = ReplyEngine(tok)
    with BackgroundServer(make_app(engine, tok, MODEL)) as server:
        yield server, engine, tok


@pytest.fixture
def engine(served):
    served[1].reply = lambda prompt: FINAL
    return served[1]


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served[0].base_url, api_key="unused", max_retries=0, timeout=60)


def post(server, stream: bool = False, **body) -> tuple[int, dict | list[dict]]:
    """(status, the response body), or for a stream (status, its chunks)."""
    data = json.dumps({"model": MODEL, "messages": MESSAGES, "stream": stream, **body}).encode()
    raw = urllib.request.Request(f"{server.base_url}/chat/completions", data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(raw, timeout=60) as response:
            text = response.read().decode()
            if not stream:
                return response.status, json.loads(text)
            events = [line[len("data: "):] for line in text.split("\n\n") if line.startswith("data: ")]
            assert events[-1] == "[DONE]"
            return response.status, [json.loads(e) for e in events[:-1]]
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def streamed(chunks: list[dict]) -> tuple[list[str], list[dict], list[str]]:
    """(content deltas, tool_calls delta entries, finish reasons) of a one-choice stream."""
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    return [d.get("content") or "" for d in deltas], [t for d in deltas for t in d.get("tool_calls", [])], finishes


# ---- non-streaming ------------------------------------------------------------------------------------------


def test_a_call_comes_back_as_tool_calls(served, engine):
    engine.reply = lambda prompt: f"Let me add them.\n{CALL}"
    status, out = post(served[0], tools=[ADD])
    assert status == 200
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["role"] == "assistant" and message["content"] == "Let me add them."
    [call] = message["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_") and len(call["id"]) > len("call_0")
    assert call["function"] == {"name": "add", "arguments": json.dumps({"a": 2, "b": 5})}


def test_a_bare_call_has_null_content_and_calls_get_distinct_ids(served, engine):
    engine.reply = lambda prompt: CALL + CALL.replace('"b": 5', '"b": 6')
    _, out = post(served[0], tools=[ADD])
    message = out["choices"][0]["message"]
    assert message["content"] is None
    assert [json.loads(c["function"]["arguments"]) for c in message["tool_calls"]] == [{"a": 2, "b": 5},
                                                                                      {"a": 2, "b": 6}]
    assert len({c["id"] for c in message["tool_calls"]}) == 2
    _, again = post(served[0], tools=[ADD])
    assert not {c["id"] for c in message["tool_calls"]} & {c["id"] for c in again["choices"][0]["message"]["tool_calls"]}
    _, first_only = post(served[0], tools=[ADD], parallel_tool_calls=False)
    assert len(first_only["choices"][0]["message"]["tool_calls"]) == 1


@pytest.mark.parametrize("reply", [
    '<tool_call>{"name": "add", "arguments": {"a": 2,}}</tool_call>',  # not JSON
    '<tool_call>{"arguments": {"a": 2}}</tool_call>',  # no name
    f'{CALL}<tool_call>{{"name": "add"',  # one good call, one never closed
    "Plain text </tool_call> with a stray tag",
])
def test_a_malformed_call_stays_text(served, engine, reply):
    engine.reply = lambda prompt: reply
    status, out = post(served[0], tools=[ADD])
    assert status == 200
    assert out["choices"][0]["message"] == {"role": "assistant", "content": reply}
    assert out["choices"][0]["finish_reason"] == "stop"
    status, chunks = post(served[0], stream=True, tools=[ADD])
    content, calls, finishes = streamed(chunks)
    assert "".join(content) == reply and calls == [] and finishes == ["stop"]


def test_a_call_cut_by_max_tokens_is_text_with_finish_length(served, engine):
    engine.reply = lambda prompt: CALL
    _, out = post(served[0], tools=[ADD], max_tokens=6)
    assert out["choices"][0]["finish_reason"] == "length"
    assert "tool_calls" not in out["choices"][0]["message"]
    assert out["choices"][0]["message"]["content"].startswith("<tool_call>")


def test_without_tools_or_with_tool_choice_none_calls_are_not_read(served, engine):
    engine.reply = lambda prompt: CALL
    plain = served[2].apply_chat_template(MESSAGES)
    for body in ({}, {"tools": [ADD], "tool_choice": "none"}):
        _, out = post(served[0], **body)
        assert out["choices"][0]["message"] == {"role": "assistant", "content": CALL}
        assert out["choices"][0]["finish_reason"] == "stop"
        assert engine.prompts[-1] == plain  # "none": the tools are not offered in the prompt either


def test_n_choices_each_carry_their_calls(served, engine):
    engine.reply = lambda prompt: CALL
    _, out = post(served[0], tools=[ADD], n=2)
    assert [c["finish_reason"] for c in out["choices"]] == ["tool_calls", "tool_calls"]
    assert all(c["message"]["tool_calls"][0]["function"]["name"] == "add" for c in out["choices"])


def test_tool_calls_beside_reasoning_content(served):
    tok = served[2]
    engine = ReplyEngine(tok)
    engine.reply = lambda prompt: f"Add them.</think>\n{CALL}"
    on = plan_reasoning(ReasoningConfig(mode="on"), tok)
    with BackgroundServer(make_app(engine, tok, MODEL, reasoning=on)) as server:
        _, out = post(server, tools=[ADD])
        status, chunks = post(server, stream=True, tools=[ADD])
    message = out["choices"][0]["message"]
    assert message["reasoning_content"] == "Add them." and message["content"] is None
    assert message["tool_calls"][0]["function"]["name"] == "add"
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "Add them."
    assert "".join(d.get("content") or "" for d in deltas) == ""
    assert [t["function"]["name"] for d in deltas for t in d.get("tool_calls", [])] == ["add"]


# ---- streaming ----------------------------------------------------------------------------------------------


def test_streamed_call_is_held_back_and_sent_as_tool_calls_deltas(served, engine):
    engine.reply = lambda prompt: f"Let me add them.\n{CALL}"
    status, chunks = post(served[0], stream=True, tools=[ADD])
    assert status == 200
    content, calls, finishes = streamed(chunks)
    assert "".join(content) == "Let me add them."
    assert len([c for c in content if c]) > 1  # the text before the call streamed as it came
    assert not any("<" in c for c in content)  # no piece of the call's markup was shown
    [call] = calls
    assert set(call) == {"index", "id", "type", "function"} and call["index"] == 0 and call["type"] == "function"
    assert call["function"] == {"name": "add", "arguments": json.dumps({"a": 2, "b": 5})}
    assert finishes == ["tool_calls"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_text_that_was_no_call_is_flushed_as_content(served, engine):
    for reply in ("Use a <tool> to add, or a <tool_ca", "Less than: 2 < 5", "Ends in an opening <tool_call>"):
        engine.reply = lambda prompt, reply=reply: reply
        _, chunks = post(served[0], stream=True, tools=[ADD])
        content, calls, finishes = streamed(chunks)
        assert "".join(content) == reply and calls == [] and finishes == ["stop"]


def test_openai_client_stream_accumulates_the_calls(client, engine):
    engine.reply = lambda prompt: CALL + CALL.replace('"b": 5', '"b": 6')
    calls: dict[int, dict] = {}
    finish = None
    for c in client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=[ADD], stream=True):
        delta = c.choices[0].delta
        for t in delta.tool_calls or []:
            entry = calls.setdefault(t.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += t.id or ""
            entry["name"] += t.function.name or ""
            entry["arguments"] += t.function.arguments or ""
        finish = c.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert [(v["name"], json.loads(v["arguments"])) for _, v in sorted(calls.items())] == [
        ("add", {"a": 2, "b": 5}), ("add", {"a": 2, "b": 6})]
    assert all(v["id"].startswith("call_") for v in calls.values())


# ---- requests -----------------------------------------------------------------------------------------------


def tool(**function) -> dict:
    return {"type": "function", "function": {"name": "add", **function}}


@pytest.mark.parametrize("body, param", [
    ({"tools": {"add": {}}}, "tools"),
    ({"tools": [{"type": "code_interpreter"}]}, "tools[0].type"),
    ({"tools": [tool(name="add two")]}, "tools[0].function.name"),
    ({"tools": [tool(), tool()]}, "tools[1].function.name"),
    ({"tools": [tool(description=3)]}, "tools[0].function.description"),
    ({"tools": [tool(parameters={"type": "string"})]}, "tools[0].function.parameters"),
    ({"tools": [tool(parameters={"type": "object", "properties": ["a"]})]}, "tools[0].function.parameters.properties"),
    ({"tools": [tool(parameters={"type": "object", "required": "a"})]}, "tools[0].function.parameters.required"),
    ({"tools": [ADD], "tool_choice": "required"}, "tool_choice"),
    ({"tools": [ADD], "tool_choice": {"type": "function", "function": {"name": "add"}}}, "tool_choice"),
    ({"tools": [ADD], "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ({"functions": [ADD["function"]]}, "functions"),
    ({"messages": [*MESSAGES, {"role": "tool", "tool_call_id": "call_9", "content": "7"}]}, "messages[1].tool_call_id"),
    ({"messages": [*MESSAGES, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{a: 2}"}}]}]},
     "messages[1].tool_calls[0].function.arguments"),
    ({"messages": [*MESSAGES, {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": ""}}]}]},
     "messages[1].tool_calls[0]"),
    ({"messages": [{"role": "user", "content": "hi", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{}"}}]}]}, "messages[0].tool_calls"),
    ({"tools": [tool(parameters={"type": "object", "properties": {"a": {"type": "integr"}}})]},
     "tools[0].function.parameters.properties.a.type"),  # not a JSON Schema (the meta-schema check)
])
def test_bad_tool_requests_get_400_naming_the_parameter(served, body, param):
    status, out = post(served[0], **body)
    assert status == 400, out
    assert out["error"]["param"] == param and out["error"]["type"] == "invalid_request_error"
    with pytest.raises(RequestError):
        parse_chat_request({"model": MODEL, "messages": MESSAGES, **body}, MODEL)


def test_unsupported_tool_choice_says_what_is_supported(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=[ADD], tool_choice="required")
    assert '"auto" or "none"' in err.value.body["message"]
    assert err.value.body["code"] == "unsupported_parameter"


def test_conversation_with_tool_turns_is_accepted():
    turn = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 5}'}}]}
    req = parse_chat_request({"model": MODEL, "tools": [ADD], "messages": [
        *MESSAGES, turn, {"role": "tool", "tool_call_id": "c1", "content": RESULT}]}, MODEL)
    assert req.messages[1]["content"] == "" and req.messages[1]["tool_calls"] == turn["tool_calls"]
    assert req.messages[2] == {"role": "tool", "tool_call_id": "c1", "content": RESULT}
    assert req.tools == [ADD] and req.tool_choice == "auto" and req.parallel_tool_calls
    empty = {"role": "assistant", "content": "Hello.", "tool_calls": []}  # some clients send [] on every turn
    assert parse_chat_request({"model": MODEL, "messages": [*MESSAGES, empty, *MESSAGES]}, MODEL).messages[1] == empty


# ---- the prompt ---------------------------------------------------------------------------------------------


def test_smollm2_prompt_gets_the_fallback_tool_description(served, engine):
    tok = served[2]
    post(served[0], tools=[ADD])
    prompt = tok.decode(engine.prompts[-1], skip_special_tokens=False)
    assert tool_system_text([ADD]) in prompt  # not dropped: SmolLM2's template renders no tools itself
    assert "Add two integers." in prompt and "<tool_call>" in prompt
    assert engine.prompts[-1] == tok.apply_chat_template(*messages_with_tools(tok, MESSAGES, [ADD]))
    assert engine.prompts[-1] != tok.apply_chat_template(MESSAGES)


def test_real_engine_and_model_serve_a_request_with_tools(served):
    """The tiny scripted model behind the real engine: the fallback prompt is what it reads, and an answer
    without calls stays content."""
    tok = served[2]
    cfg, params = scripted_model(tok, "The sum is 7")
    real = Engine(params, cfg, eos_ids=tok.eos_ids, config=EngineConfig(slots=2, max_context=512)).start()
    try:
        with BackgroundServer(make_app(real, tok, MODEL)) as server:
            client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=60)
            out = client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=[ADD])
    finally:
        real.stop()
    assert out.choices[0].message.content == "The sum is 7" and out.choices[0].message.tool_calls is None
    assert out.choices[0].finish_reason == "stop"
    assert out.usage.prompt_tokens == len(tok.apply_chat_template(*messages_with_tools(tok, MESSAGES, [ADD])))


# ---- the openai client's tool loop --------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_openai_client_tool_loop(client, engine, served, stream):
    """Request with tools -> tool_calls -> the client runs the tool and appends its result -> the final answer."""
    tok = served[2]
    engine.reply = lambda prompt: FINAL if RESULT in prompt else f"I will add.\n{CALL}"
    messages = list(MESSAGES)
    for turn in range(3):  # noqa: B007 (counted)
        if stream:
            with client.chat.completions.stream(model=MODEL, messages=messages, tools=[ADD]) as events:
                out = events.get_final_completion()
        else:
            out = client.chat.completions.create(model=MODEL, messages=messages, tools=[ADD])
        message = out.choices[0].message
        if not message.tool_calls:
            break
        assert out.choices[0].finish_reason == "tool_calls" and message.content == "I will add."
        messages.append(message)  # the client's own message object, as the tool loop appends it
        for call in message.tool_calls:
            args = json.loads(call.function.arguments)
            assert (call.function.name, args) == ("add", {"a": 2, "b": 5})
            messages.append({"role": "tool", "tool_call_id": call.id,
                             "content": json.dumps({"sum": args["a"] + args["b"]})})
    assert turn == 1 and message.content == FINAL and out.choices[0].finish_reason == "stop"
    prompt = tok.decode(engine.prompts[-1], skip_special_tokens=False)
    assert RESULT in prompt and '"add"' in prompt.split("What is two plus five?")[1]  # the call is in the history
    assert parse_tool_calls(prompt.split("What is two plus five?")[1]).calls[0].arguments == {"a": 2, "b": 5}
