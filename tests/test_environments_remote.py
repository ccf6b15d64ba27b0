"""The remote environment against a tiny HTTP server on loopback: the protocol round trip, and every
failure (a timeout, an HTTP error, bad JSON, no server) contained as one error tool message."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rft_jax.data.example import Example
from rft_jax.data.tool_calls import ParsedTurn, ToolCall
from rft_jax.environments import EnvironmentConfig, make_environment

EXAMPLE = Example("r1", [{"role": "user", "content": "What is 2 + 2?"}], reference_answer="4",
                  metadata={"level": 1})
TURN = ParsedTurn("let me add", (ToolCall("add", {"a": 2, "b": 2}, "call_0"),))


class Handler(BaseHTTPRequestHandler):
    """A toy environment: `add` answers the sum; the episode is done when the model calls `submit`."""

    def do_POST(self):
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server.requests.append((self.path, body))
        if server.mode == "slow":
            time.sleep(server.release_after)
        if server.mode == "http_error":
            self.send_error(500, "broken")
            return
        if self.path == "/reset":
            answer = {"session": "s-1", "messages": [{"role": "user", "content": "You may use `add`."}]}
        elif self.path == "/step":
            calls = body["tool_calls"]
            done = any(c["function"]["name"] == "submit" for c in calls)
            messages = [{"role": "tool", "tool_call_id": c["id"], "name": c["function"]["name"],
                         "content": str(sum(json.loads(c["function"]["arguments"]).values()))}
                        for c in calls if c["function"]["name"] == "add"]
            answer = {"messages": messages, "reward": 0.5 if done else 0.1, "done": done}
        else:
            answer = {}
        data = b"this is not json" if server.mode == "bad_json" and self.path == "/step" else json.dumps(
            answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.requests, httpd.mode, httpd.release_after = [], "ok", 2.0
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def remote(server, timeout_s=2.0):
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    return make_environment(EnvironmentConfig(name="remote", url=url, timeout_s=timeout_s), EXAMPLE)


def test_remote_protocol_round_trip(server):
    env = remote(server)
    assert env.reset(EXAMPLE) == [{"role": "user", "content": "You may use `add`."}]
    result = env.step(TURN)
    assert result.messages == [{"role": "tool", "tool_call_id": "call_0", "name": "add", "content": "4"}]
    assert result.reward == 0.1 and not result.done and result.errors == 0
    done = env.step(ParsedTurn("", (ToolCall("submit", {"answer": "4"}, "call_0"),), ("a bad call",)))
    assert done.done and done.reward == 0.5 and done.errors == 1
    env.close()
    paths = [path for path, _ in server.requests]
    assert paths == ["/reset", "/step", "/step", "/close"]
    assert server.requests[0][1] == {"example": EXAMPLE.to_record()}
    assert server.requests[1][1] == {"session": "s-1", "content": "let me add", "errors": [], "tool_calls": [
        {"id": "call_0", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 2}'}}]}
    assert server.requests[2][1]["errors"] == ["a bad call"]
    assert server.requests[3][1] == {"session": "s-1"}


def test_a_server_slower_than_the_timeout_is_an_error_message(server):
    env = remote(server, timeout_s=0.3)
    env.reset(EXAMPLE)
    server.mode, server.release_after = "slow", 1.5
    start = time.monotonic()
    result = env.step(TURN)
    assert time.monotonic() - start < 1.2 and not result.done
    assert result.errors == 1 and len(result.messages) == 1
    message = result.messages[0]
    assert message["tool_call_id"] == "call_0" and message["role"] == "tool"
    assert message["content"].startswith("Error: the remote environment failed") and "0.3 s" in message["content"]
    server.mode = "ok"
    assert env.step(TURN).messages[0]["content"] == "4"  # the next turn works again
    env.close()


@pytest.mark.parametrize("mode, expect", [("http_error", "HTTP 500 broken"), ("bad_json", "not JSON")])
def test_http_errors_and_bad_json_are_error_messages(server, mode, expect):
    env = remote(server)
    env.reset(EXAMPLE)
    server.mode = mode
    result = env.step(TURN)
    assert result.errors == 1 and expect in result.messages[0]["content"]
    env.close()  # best effort: an HTTP error on close is ignored


def test_no_server_at_reset_ends_the_episode_at_the_first_step(server):
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    env = make_environment(EnvironmentConfig(name="remote", url=f"http://127.0.0.1:{port}", timeout_s=0.5), EXAMPLE)
    assert env.reset(EXAMPLE) == []
    result = env.step(TURN)
    assert result.done and result.errors == 1
    assert result.messages[0]["content"].startswith("Error: the remote environment is unavailable (reset failed")
    env.close()
