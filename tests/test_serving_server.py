"""The OpenAI-compatible server, driven by the official `openai` client over loopback.

The model is scripted (see test_serving_support.py): it answers every prompt
with SCRIPT, so each assertion can name the exact text, while the engine,
sampler, tokenizer, HTTP layer and client are all the real ones.
"""

from __future__ import annotations

import concurrent.futures
import json
import urllib.error
import urllib.request

import openai
import pytest
from test_serving_support import scripted_model, smollm2_tokenizer

from rft_jax.serving import BackgroundServer, Engine, EngineConfig, make_app

SCRIPT = "The answer is clear. Score: 7"
MODEL = "scripted"
MESSAGES = [{"role": "user", "content": "Is the answer clear?"}]


@pytest.fixture(scope="module")
def served():
    tok = smollm2_tokenizer()
    cfg, params = scripted_model(tok, SCRIPT)
    engine = Engine(params, cfg, eos_ids=tok.eos_ids, config=EngineConfig(slots=8, max_context=256)).start()
    with BackgroundServer(make_app(engine, tok, MODEL)) as server:
        yield server, tok
    engine.stop()


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served[0].base_url, api_key="unused", max_retries=0, timeout=60)


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_chat_completion(client, served):
    tok = served[1]
    out = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert out.choices[0].message.content == SCRIPT
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].finish_reason == "stop"
    assert out.usage.prompt_tokens == len(tok.apply_chat_template(MESSAGES))
    assert out.usage.completion_tokens == len(tok.encode(SCRIPT)) + 1  # the end token counts


def test_streaming_with_usage(client):
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == SCRIPT
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_n_choices(client):
    out = client.chat.completions.create(model=MODEL, messages=MESSAGES, n=3, temperature=1.0, seed=1)
    assert [c.index for c in out.choices] == [0, 1, 2]
    assert all(c.message.content == SCRIPT for c in out.choices)


def test_stop_sequences(client):
    out = client.chat.completions.create(model=MODEL, messages=MESSAGES, stop=[" clear", "nothing"])
    assert out.choices[0].message.content == "The answer is"
    assert out.choices[0].finish_reason == "stop"
    # Streamed: the start of the stop string (" cl") is held back, never shown then taken back.
    chunks = client.chat.completions.create(model=MODEL, messages=MESSAGES, stop=". Score", stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "The answer is clear"


def test_max_tokens(client):
    out = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=3)
    assert out.choices[0].message.content == "The answer is"
    assert out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 3


def test_bad_requests_get_openai_error_bodies(client, served):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=5)
    assert err.value.body["param"] == "temperature" and err.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert err.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=10_000)
    assert err.value.body["code"] == "context_length_exceeded"
    raw = urllib.request.Request(f"{served[0].base_url}/chat/completions", data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(raw, timeout=30)
    assert err.value.code == 400 and "message" in json.loads(err.value.read())["error"]


def test_concurrent_clients_are_batched(client):
    def ask(i):
        return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"q{i}"}],
                                              max_tokens=4 + i % 4)
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        outs = list(pool.map(ask, range(12)))  # more requests than slots: some wait in the queue
    for i, out in enumerate(outs):
        assert out.usage.completion_tokens == 4 + i % 4  # the script is 9 tokens, so max_tokens decides


def test_bearer_token(served):
    tok = served[1]
    cfg, params = scripted_model(tok, SCRIPT)
    engine = Engine(params, cfg, eos_ids=tok.eos_ids, config=EngineConfig(slots=2, max_context=128)).start()
    try:
        with BackgroundServer(make_app(engine, tok, MODEL, token="s3cret")) as server:
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0).models.list()
            good = openai.OpenAI(base_url=server.base_url, api_key="s3cret", max_retries=0)
            out = good.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2)
            assert out.choices[0].message.content == "The answer"
    finally:
        engine.stop()
