"""Input fuzzing of every door untrusted JSON comes in by: the JSONL validator (and `rft-jax data validate`),
the reward endpoint and the chat server.

One seeded generator mutates a valid line or body: truncation, byte flips, invalid UTF-8, wrong types in
every field, unknown fields, huge strings, nesting 10,000 deep, non-object JSON, 5,000-digit numbers and
unpaired surrogate escapes. Whatever comes in, nothing raises past the boundary: the validator names the
line and field of each bad line, and a server answers a valid response or a 4xx JSON error body in
OpenAI's format, never a traceback or a source path.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
import re

import pytest
from starlette.testclient import TestClient

from rft_jax.cli.data import main as data_main
from rft_jax.data.problems import DatasetError
from rft_jax.data.validate import load_examples, read_lines, validate_file, validate_lines
from rft_jax.rewards import build_reward
from rft_jax.rewards.remote import server as reward_server

SEED = 20261203
CASES = 300  # per target, besides the fixed ones
ADD = {"type": "function", "function": {"name": "add", "description": "Add two numbers.", "parameters": {
    "type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}}}
CALL = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}
RECORD = {"id": "r1", "reference_answer": 3, "tools": [ADD], "level": "easy", "messages": [
    {"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "1+2?"}]},
    {"role": "assistant", "content": None, "tool_calls": [CALL]}, {"role": "tool", "tool_call_id": "c1",
                                                                  "content": "3"}]}
SAMPLES = [{"id": f"s{i}", "messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": text}],
            "metadata": {"reference_answer": 2, "level": "easy"}} for i, text in enumerate(["ANSWER: 2", "3"])]
MODEL = "fuzzed"
CHAT = {"model": MODEL, "max_tokens": 4, "temperature": 0.5, "n": 2, "stop": ["zz"], "seed": 1, "tools": [ADD],
        "stream_options": {"include_usage": True},
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+2?"},
                     {"role": "assistant", "content": "", "tool_calls": [CALL]},
                     {"role": "tool", "tool_call_id": "c1", "content": "3"}]}

ODD = [None, True, False, 0, -1, 2**62, 1.5, -1e308, "", "x", " ", [], {}, [[]], {"a": {}}, [None], ["x", 1],
       "\u2028", "é\u0085", {"type": "image_url", "image_url": {"url": "data:,"}}, "__DEEP__", "__HUGE__"]
DEEP = "[" * 10_000 + "]" * 10_000
BAD_UTF8 = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80", b"\xe2\x82"]
FIXED = {"empty": b"", "space": b"   ", "null": b"null", "number": b"1", "string": b'"text"', "list": b"[]",
         "object": b"{}", "true": b"true", "nan": b"NaN", "deep list": DEEP.encode(),
         "deep object": b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "big integer": b"9" * 5000,
         "unclosed": b'{"messages": [', "only BOM": b"\xef\xbb\xbf", "NUL": b"\x00"}


def paths(value, path=()):
    """Every place in the value (the root too), as key/index paths."""
    yield path
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield from paths(child, (*path, key))


def put(value, path, new):
    if not path:
        return new
    out = copy.deepcopy(value)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = new
    return out


def encode(value) -> bytes:
    """JSON bytes with the placeholders filled in: nesting no encoder will write, and a 1 MB string."""
    text = json.dumps(value)
    return text.replace('"__DEEP__"', DEEP).replace("__HUGE__", "y" * 1_000_000).encode()


def mutate(base, rng: random.Random) -> tuple[str, bytes]:
    """One (label, body) mutation of a valid value: structural (wrong type, unknown field, deletion) or on
    its bytes (truncation, flips, invalid UTF-8, surrogate escapes, big numbers)."""
    places = list(paths(base))
    where = rng.choice(places)
    kind = rng.choice(["type", "type", "unknown", "delete", "truncate", "flip", "utf8", "surrogate", "digits"])
    if kind == "type":
        odd = rng.choice(ODD)
        return f"{where}={str(odd)[:12]!r}", encode(put(base, where, odd))
    if kind == "unknown" or (kind == "delete" and not where):
        parent = rng.choice([p for p in places if isinstance(dig(base, p), dict)])
        return f"{parent}+unknown", encode(put(base, (*parent, "zz_unknown"), rng.choice(ODD)))
    if kind == "delete":
        parent = dig(base, where[:-1])
        out = put(base, where[:-1], [v for k, v in enumerate(parent) if k != where[-1]] if isinstance(parent, list)
                  else {k: v for k, v in parent.items() if k != where[-1]})
        return f"{where} deleted", encode(out)
    raw = bytearray(encode(base))
    at = rng.randrange(len(raw))
    if kind == "truncate":
        return f"truncated@{at}", bytes(raw[:at])
    if kind == "flip":
        raw[at] ^= rng.randrange(1, 256)
        return f"flip@{at}", bytes(raw)
    if kind == "utf8":
        return f"utf8@{at}", bytes(raw[:at] + rng.choice(BAD_UTF8) + raw[at:])
    text = "\\ud800" if kind == "surrogate" else "1" * 4500
    return f"{kind}@{where}", encode(put(base, where, "__X__")).replace(b'"__X__"', f'"{text}"'.encode()
                                                                        if kind == "surrogate" else text.encode())


def dig(value, path):
    for key in path:
        value = value[key]
    return value


def cases(base, seed: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    return [*FIXED.items(), ("valid", encode(base)), *(mutate(base, rng) for _ in range(CASES))]


LEAK = re.compile(r"Traceback|File \"|\.py\b|line \d+, in ")


# ---- the JSONL validator ----

def test_validator_names_every_bad_line():
    good = json.dumps(RECORD)
    crashed, unnamed = [], []
    for label, body in cases(RECORD, SEED):
        try:
            result = validate_lines([good, body])
        except Exception as err:  # noqa: BLE001 (the point: nothing may escape)
            crashed.append(f"{label}: {type(err).__name__}")
            continue
        on_line = [p for p in result.problems if p.line == 2]
        if body.strip() and 2 not in result.lines and not on_line:
            unnamed.append(label)
        unnamed += [f"{label}: {p.format('f.jsonl')[:80]}..." for p in on_line
                    if not (p.field and p.fix and len(p.format("f.jsonl")) < 600)]  # a clear, short message
    assert not crashed, f"{len(crashed)} line(s) crashed the validator: {crashed}"
    assert not unnamed, f"bad lines without a short problem naming them: {unnamed}"


def test_validate_command_on_a_fuzzed_file(tmp_path, capsys):
    path = tmp_path / "fuzzed.jsonl"
    bodies = [body.replace(b"\n", b" ") for _, body in cases(RECORD, SEED + 1)]
    path.write_bytes(b"\xef\xbb\xbf" + b"\n".join([json.dumps(RECORD, ensure_ascii=False).encode(), *bodies]))
    lines = read_lines(str(path))
    result = validate_file(str(path))
    assert 1 in result.lines  # the byte-order mark does not spoil the first line
    for number, line in enumerate(lines, start=1):
        assert not line.strip() or number in result.lines or any(p.line == number for p in result.problems)
    assert data_main(["validate", str(path)]) == 1
    out = capsys.readouterr()
    assert re.search(rf"{re.escape(str(path))}:\d+: ", out.out) and not LEAK.search(out.err)
    with pytest.raises(DatasetError, match=r"fuzzed\.jsonl:\d+: "):
        load_examples(str(path))


def test_unicode_line_separators_inside_strings_stay_on_their_line(tmp_path):
    """write_jsonl writes U+2028 and U+0085 unescaped: they are inside a string, not line ends."""
    record = {**RECORD, "messages": [{"role": "user", "content": "a\u2028b\u0085c\x1cd"}], "tools": None}
    path = tmp_path / "sep.jsonl"
    path.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    result = validate_file(str(path))
    assert not result.problems and result.lines == [1]


# ---- the servers ----

def check_reply(label: str, response, ok) -> str | None:
    """None when the reply is a valid response (`ok`) or a clean 4xx; else what is wrong with it."""
    text = response.text
    if response.status_code >= 500 or LEAK.search(text):
        return f"{label}: {response.status_code} {text[:80]!r}"
    if response.status_code >= 400:
        try:
            err = response.json().get("error")
        except ValueError:
            return f"{label}: {response.status_code}, not JSON: {text[:80]!r}"
        if not (isinstance(err, dict) and err.get("message") and {"type", "param", "code"} <= err.keys()):
            return f"{label}: not an OpenAI error body: {text[:80]!r}"
        return None
    return None if ok(response) else f"{label}: bad 200 reply {text[:80]!r}"


def fuzz(client: TestClient, url: str, base, seed: int, ok, headers: dict) -> None:
    bad = [check_reply(label, client.post(url, content=body, headers=headers), ok)
           for label, body in cases(base, seed)]
    bad = [b for b in bad if b]
    assert not bad, f"{len(bad)} request(s) answered wrongly: {bad}"


def reward_client(**limits) -> TestClient:
    scorer = build_reward({"name": "aggregate", "components": {
        "correct": {"name": "math_answer", "mode": "strict_line"}, "format": {"name": "answer_format"}}})
    return TestClient(reward_server.make_app(scorer, token="tok", **limits), raise_server_exceptions=False)


REWARD_HEADERS = {"Authorization": "Bearer tok", "Content-Type": "application/json"}


def test_reward_endpoint_survives_fuzzing():
    def ok(response):
        reply = response.json()
        return isinstance(reply, list) and all({"id", "aggregate_reward_score", "metrics_list"} <= r.keys()
                                               for r in reply)
    fuzz(reward_client(), "/", SAMPLES, SEED + 2, ok, REWARD_HEADERS)


def test_reward_endpoint_limits():
    client = reward_client(max_body_bytes=4 << 20, max_samples=8)
    big = client.post("/", content=b"[" + b" " * (5 << 20) + b"]", headers=REWARD_HEADERS)
    assert big.status_code == 413 and "at most 4194304" in big.json()["error"]["message"]
    chunked = client.post("/", content=iter([b"[" + b" " * (1 << 20)] * 5 + [b"]"]), headers=REWARD_HEADERS)
    assert chunked.status_code == 413  # no Content-Length: cut off while reading
    many = client.post("/", json=SAMPLES * 5, headers=REWARD_HEADERS)
    assert many.status_code == 400 and "at most 8" in many.json()["error"]["message"]
    item = client.post("/", json=[{**SAMPLES[0], "messages": [{"role": "user", "content": 5}, {}]}],
                              headers=REWARD_HEADERS).json()[0]
    assert item["aggregate_reward_score"] == 0.0 and item["error"].startswith("messages[0].content: ")


def test_a_declared_length_over_the_limit_is_refused_unread():
    from rft_jax.data.json_input import TooLarge, read_limited

    async def never():
        raise AssertionError("the body was read")
        yield b""

    with pytest.raises(TooLarge, match="at most 10"):
        asyncio.run(read_limited(never(), "11", 10))


@pytest.fixture(scope="module")
def tokenizer():
    from test_serving_support import smollm2_tokenizer

    return smollm2_tokenizer()


def chat_client(tokenizer, **limits) -> TestClient:
    from rft_jax.serving import make_app

    app = make_app(FakeEngine(tokenizer), tokenizer, MODEL, **limits)
    return TestClient(app, raise_server_exceptions=False)


class FakeEngine:
    """Answers every request with "ok" at once: the HTTP layer, validation and the real tokenizer's chat
    template, without a model."""

    def __init__(self, tokenizer):
        from rft_jax.serving import EngineConfig

        self.config, self.eos_ids = EngineConfig(slots=4, max_context=512), tokenizer.eos_ids
        self.busy = self.steps = 0
        self.reply = tokenizer.encode("ok")

    def submit(self, request) -> None:
        for token in self.reply[:request.max_tokens]:
            request.emit(token, None)
        request.emit(None, "stop")


def chat_ok(response) -> bool:
    if response.headers["content-type"].startswith("text/event-stream"):
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        return events[-1] == "[DONE]" and all("choices" in json.loads(e) for e in events[:-1])
    return len(response.json()["choices"]) >= 1


def test_chat_server_survives_fuzzing(tokenizer):
    client = chat_client(tokenizer)
    fuzz(client, "/v1/chat/completions", CHAT, SEED + 3, chat_ok, {"Content-Type": "application/json"})
    fuzz(client, "/v1/chat/completions", {**CHAT, "stream": True}, SEED + 4, chat_ok, {})


def test_chat_server_limits(tokenizer):
    chat = chat_client(tokenizer, max_body_bytes=4 << 20, max_messages=8)
    url = "/v1/chat/completions"
    big = chat.post(url, content=b"{" + b" " * (5 << 20) + b"}")
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}] * 5
    many = chat.post(url, json={**CHAT, "tools": None, "messages": turns[:9]})
    assert many.status_code == 400 and many.json()["error"]["param"] == "messages"
    assert "at most 8" in many.json()["error"]["message"]
    image = {**CHAT, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}
    refused = chat.post(url, json=image).json()["error"]
    assert refused["param"] == "messages[0].content[0]"
    wrong_path = chat.get("/v1/nothing")
    assert wrong_path.status_code == 404 and "message" in wrong_path.json()["error"]


def test_limit_flags_reach_the_servers(monkeypatch, capsys):
    from rft_jax import cli

    for words, flags in [(["serve"], ["--max-body-mib", "--max-messages"]),
                         (["reward", "serve"], ["--max-body-mib", "--max-samples"])]:
        with pytest.raises(SystemExit):
            cli.main([*words, "--help"])
        out = capsys.readouterr().out
        assert all(flag in out for flag in flags), out
    seen = {}
    monkeypatch.setattr(reward_server, "serve", lambda scorer, **kw: seen.update(kw))
    assert cli.main(["reward", "serve", "math_answer", "--max-body-mib", "0.5", "--max-samples", "5"]) == 0
    assert seen["max_body_bytes"] == 1 << 19 and seen["max_samples"] == 5


@pytest.mark.parametrize("record, field", [
    ({"messages": [{"role": "tool", "content": "a"}, {"role": "tool", "content": "b"}]}, "messages[0].role"),
    ({**RECORD, "tools": [{**ADD, "function": {**ADD["function"], "parameters": {"$schema": [1]}}}]},
     "tools[0].function.parameters.$schema"),
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0]"),
])
def test_lines_that_crashed_the_validator(record, field):
    """Found by the fuzzer: an IndexError, a TypeError from jsonschema, a KeyError from a text part without text."""
    assert field in [p.field for p in validate_lines([json.dumps(record)]).problems]
