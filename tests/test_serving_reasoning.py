"""Reasoning mode in the OpenAI-compatible server: reasoning_content beside content, and per-request think budgets.

The served model is scripted (test_serving_support.py): after any prompt it
thinks THINKING, writes the closing tag, answers ANSWER and stops, so each
assertion names the exact text. A forced closing tag is fed back to it, and
from the tag's last token the script goes on into the answer, so the answer
shows that the model read the tag.
"""

from __future__ import annotations

import json
import random
import threading
import urllib.error
import urllib.request

import openai
import pytest
import tyro
from test_serving_support import scripted_model, smollm2_tokenizer

from rft_jax.cli.serve import ServeOptions
from rft_jax.data.reasoning import (
    EFFORT_BUDGETS,
    ReasoningConfig,
    ReasoningPlan,
    plan_reasoning,
    render_prompt,
    split_reasoning,
)
from rft_jax.serving import BackgroundServer, Engine, EngineConfig, Request, make_app
from rft_jax.serving.protocol import RequestError, parse_chat_request
from rft_jax.serving.reasoning import ReasoningStream, ThinkBudget, ThinkState, request_budgets

THINKING, ANSWER = "Add two and five.", "The sum is 7"
SCRIPT = f"{THINKING}</think>{ANSWER}"  # 5 thinking tokens, the tag (3), 5 answer tokens
MODEL = "scripted"
MESSAGES = [{"role": "user", "content": "What is two plus five?"}]


@pytest.fixture(scope="module")
def servers():
    """(reasoning-on server, reasoning-off server, tokenizer, engine): two apps over one engine (one compile)."""
    tok = smollm2_tokenizer()
    cfg, params = scripted_model(tok, SCRIPT)
    engine = Engine(params, cfg, eos_ids=tok.eos_ids, config=EngineConfig(slots=2, max_context=256)).start()
    on = plan_reasoning(ReasoningConfig(mode="on"), tok)
    with BackgroundServer(make_app(engine, tok, MODEL, reasoning=on)) as thinking, \
            BackgroundServer(make_app(engine, tok, MODEL)) as plain:
        yield thinking, plain, tok, engine
    engine.stop()


def post(server, **body) -> tuple[int, dict]:
    data = json.dumps({"model": MODEL, "messages": MESSAGES, **body}).encode()
    raw = urllib.request.Request(f"{server.base_url}/chat/completions", data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(raw, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_message_splits_thinking_from_answer_at_the_closing_tag(servers):
    status, out = post(servers[0])
    assert status == 200
    message = out["choices"][0]["message"]
    assert message["reasoning_content"] == THINKING and message["content"] == ANSWER
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["usage"]["completion_tokens_details"]["reasoning_tokens"] == 5 + 3  # its own tag is thinking
    assert out["usage"]["completion_tokens"] == 5 + 3 + 5 + 1  # the end token counts


def test_streamed_deltas_reassemble_the_two_fields(servers):
    client = openai.OpenAI(base_url=servers[0].base_url, api_key="unused", max_retries=0, timeout=60)
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True,
                                                 stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    thinking = [getattr(d, "reasoning_content", None) or "" for d in deltas]
    answer = [d.content or "" for d in deltas]
    assert "".join(thinking) == THINKING and "".join(answer) == ANSWER
    assert len([t for t in thinking if t]) > 1  # streamed as it came, not in one piece at the end
    last_thought = max(i for i, t in enumerate(thinking) if t)
    assert all(not a for a in answer[:last_thought + 1])  # thinking first, then the answer
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == 8


def test_max_reasoning_tokens_forces_the_closing_tag_at_the_budget(servers):
    tok = servers[2]
    for budget in (2, 0):
        status, out = post(servers[0], max_reasoning_tokens=budget)
        assert status == 200
        message, usage = out["choices"][0]["message"], out["usage"]
        # the budget's tokens of thinking, then the forced tag; the model reads it and answers
        assert message["reasoning_content"] == tok.decode(tok.encode(THINKING)[:budget])
        assert message["content"] == ANSWER
        assert usage["completion_tokens_details"]["reasoning_tokens"] == budget
        assert usage["completion_tokens"] == budget + 3 + 5 + 1


def test_reasoning_effort_maps_to_effort_budgets(servers, monkeypatch):
    plan = ReasoningPlan(ReasoningConfig(mode="on"), True, False, {}, "think", (7,), (9,), (9, 10), 256, 64)
    for effort, tokens in EFFORT_BUDGETS.items():
        req = parse_chat_request({"model": "m", "messages": MESSAGES, "reasoning_effort": effort}, "m")
        assert request_budgets(req, plan, room=10_000) == (ThinkBudget(tokens, (9, 10), ((9,),)), 64)
    req = parse_chat_request({"model": "m", "messages": MESSAGES}, "m")
    assert request_budgets(req, plan, room=10_000)[0].tokens == 256  # neither field: the server's budget
    assert request_budgets(req, plan, room=100)[0].tokens == 100 - 64  # cut to what the answer leaves
    # served: "minimal" is 0 tokens; "low" (patched to 3) forces the tag after 3
    _, out = post(servers[0], reasoning_effort="minimal")
    assert out["choices"][0]["message"] == {"role": "assistant", "content": ANSWER, "reasoning_content": ""}
    monkeypatch.setitem(EFFORT_BUDGETS, "low", 3)
    _, out = post(servers[0], reasoning_effort="low")
    assert out["choices"][0]["message"]["reasoning_content"] == "Add two and"
    assert out["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3


@pytest.mark.parametrize("body, param", [
    ({"max_reasoning_tokens": -1}, "max_reasoning_tokens"),
    ({"max_reasoning_tokens": "many"}, "max_reasoning_tokens"),
    ({"max_reasoning_tokens": 1.5}, "max_reasoning_tokens"),
    ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ({"reasoning_effort": 3}, "reasoning_effort"),
    ({"max_reasoning_tokens": 10, "reasoning_effort": "low"}, "reasoning_effort"),
    ({"max_reasoning_tokens": 5000}, "max_reasoning_tokens"),  # more than the context leaves
    ({"max_tokens": 3}, "max_tokens"),  # no room after the forced tag
])
def test_bad_reasoning_values_get_400(servers, body, param):
    status, out = post(servers[0], **body)
    assert status == 400 and out["error"]["param"] == param
    assert param in out["error"]["message"] or "max_tokens" in out["error"]["message"]


def test_bad_effort_message_lists_the_levels(servers):
    _, out = post(servers[0], reasoning_effort="extreme")
    assert all(level in out["error"]["message"] for level in EFFORT_BUDGETS)


def test_reasoning_off_serves_plain_content(servers):
    status, out = post(servers[1])
    assert status == 200
    assert out["choices"][0]["message"] == {"role": "assistant", "content": SCRIPT}  # no reasoning_content
    assert "completion_tokens_details" not in out["usage"]
    status, out = post(servers[1], reasoning_effort="low")  # asks for what this server does not do
    assert status == 400 and out["error"]["param"] == "reasoning_effort"


def test_thinking_left_open_has_an_empty_answer(servers):
    status, out = post(servers[0], stop=[" and"])  # the stop string cuts inside the thinking
    assert out["choices"][0]["message"]["reasoning_content"] == "Add two"
    assert out["choices"][0]["message"]["content"] == ""


def test_stream_split_equals_split_reasoning_for_any_chunking():
    texts = ["<think>\nA b.\n</think>\n\nAnswer 7 ", "  plain thought </think>x", "no tag at all <", "<thi",
             "</think>", "a </thi", "<think>a</think>b</think>c", "x\n\n</think>  ", ""]
    rng = random.Random(0)
    for text in texts:
        for _ in range(20):
            cuts = sorted(rng.sample(range(len(text) + 1), min(3, len(text) + 1)))
            pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
            stream = ReasoningStream("<think>", "</think>")
            outs = [stream.push(p) for p in pieces] + [stream.finish()]
            want = split_reasoning(text)
            assert "".join(o[0] for o in outs) == want.thinking and "".join(o[1] for o in outs) == want.answer
            assert not any("</think>" in o[0] for o in outs)  # the tag is never shown, not even in parts


class _TemplateSpy:
    """A tokenizer whose chat template has Qwen3's thinking switch; records how it was rendered."""

    def __init__(self):
        self.hf, self.calls = type("HF", (), {"chat_template": "{% if enable_thinking %}...{% endif %}"})(), []

    def encode(self, text):
        return [ord(c) for c in text]

    def apply_chat_template(self, messages, tools=None, **kw):
        self.calls.append((messages, kw))
        return [1, 2]


def test_native_template_is_rendered_with_thinking_switched_on_or_off():
    tok = _TemplateSpy()
    assert render_prompt(tok, MESSAGES, None, plan_reasoning(ReasoningConfig(), tok)) == [1, 2]
    assert tok.calls[-1] == (MESSAGES, {"enable_thinking": False})
    assert render_prompt(tok, MESSAGES, None, plan_reasoning(ReasoningConfig(mode="on"), tok)) == [1, 2]
    assert tok.calls[-1] == (MESSAGES, {"enable_thinking": True})  # the model opens its own tag


def test_think_fields_are_refused_together_and_parsed_apart():
    base = {"model": "m", "messages": MESSAGES}
    assert parse_chat_request({**base, "max_reasoning_tokens": 0}, "m").max_reasoning_tokens == 0
    with pytest.raises(RequestError, match="not both"):
        parse_chat_request({**base, "max_reasoning_tokens": 1, "reasoning_effort": "high"}, "m")


def test_think_state_counts_forces_and_notices_its_own_closing_tag():
    forced = ThinkState(ThinkBudget(3, (7, 8, 5), ((7, 8),)))
    assert [forced.next(t) for t in (1, 2, 3, 4, 4, 4, 6)] == [
        (1, True), (2, True), (3, True), (7, False), (8, False), (5, False), (6, False)]  # sampled 4s dropped
    closed = ThinkState(ThinkBudget(4, (7, 8), ((7, 8),)))
    assert [closed.next(t) for t in (1, 7, 8, 2, 3, 4)] == [
        (1, True), (7, True), (8, True), (2, False), (3, False), (4, False)]
    assert (forced.thought, closed.thought) == (3, 3)
    assert ThinkState(ThinkBudget(0, (7,), ((7,),))).next(1) == (7, False)


def test_engine_emits_and_feeds_the_forced_ids_at_the_budget(servers):
    """The served token ids: 2 thinking tokens, the forced tag in place of what was sampled, then the answer the
    scripted model writes only after reading the tag."""
    tok, engine = servers[2], servers[3]
    plan = plan_reasoning(ReasoningConfig(mode="on"), tok)
    prompt = render_prompt(tok, MESSAGES, None, plan)
    tokens, done = [], threading.Event()
    request = Request(prompt, 16, lambda t, f: tokens.append(t) if f is None else done.set(), temperature=0.0,
                      think=ThinkBudget(2, plan.forced_ids, plan.closings))
    engine.submit(request)
    assert done.wait(60)
    think_ids = tok.encode(THINKING)
    assert tokens == think_ids[:2] + list(plan.close_ids) + tok.encode(ANSWER) + [tok.eos_ids[-1]]
    assert request.thinking_tokens == 2


def test_serve_cli_takes_the_reasoning_config():
    opts = tyro.cli(ServeOptions, args=["--reasoning.mode", "on", "--reasoning.think-budget", "8",
                                        "--reasoning.answer-cue", "\nANSWER:"])
    assert opts.reasoning == ReasoningConfig(mode="on", think_budget=8, answer_cue="\nANSWER:")
