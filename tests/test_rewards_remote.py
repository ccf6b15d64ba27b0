"""Remote rewards: the HTTP client and `rft-jax reward serve`, over the loopback."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rft_jax.cli.reward import main as reward_main
from rft_jax.data import Example
from rft_jax.rewards import build_reward
from rft_jax.rewards.remote.client import remote_reward_batch
from rft_jax.rewards.remote.server import start_in_thread

EXAMPLES = [Example(id=f"q{i}", messages=[{"role": "system", "content": "s"}, {"role": "user", "content": f"{i}+1?"}],
                    reference_answer=i + 1, metadata={"level": "easy"}) for i in range(5)]


@pytest.fixture(scope="module")
def server():
    scorer = build_reward({"name": "aggregate", "components": {
        "correct": {"name": "math_answer", "mode": "strict_line"}, "format": {"name": "answer_format", "weight": 0.5}}})
    srv, port = start_in_thread(scorer, token="tok")
    yield f"http://127.0.0.1:{port}/"
    srv.should_exit = True


def test_wire_shape_matches_the_managed_services(server):
    messages = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "ANSWER: 2"}]
    body = [{"id": "a", "messages": messages,
             "metadata": {"reference_answer": 2, "level": "easy"}}]
    request = urllib.request.Request(server, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": "Bearer tok", "Content-Type": "application/json"})
    reply = json.loads(urllib.request.urlopen(request, timeout=10).read())
    assert reply == [{"id": "a", "aggregate_reward_score": 1.5, "metrics_list": [
        {"name": "correct", "value": 1.0, "type": "Reward"}, {"name": "format", "value": 1.0, "type": "Reward"},
        {"name": "correct/format_ok", "value": 1.0, "type": "Metric"},
        {"name": "correct/correct", "value": 1.0, "type": "Metric"}]}]


def post(url: str, body: object, token: str = "tok") -> object:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(request, timeout=10).read())


def test_top_level_reference_answer_as_the_nova_reward_pages_send_it(server):
    """AWS's Nova reward-function pages put reference_answer (and the row's other fields) at the top of each
    sample; Bedrock's put it under metadata. Both layouts score the same."""
    messages = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "ANSWER: 2"}]
    nova = post(server, [{"id": "n", "messages": messages, "reference_answer": 2, "level": "easy"}])
    bedrock = post(server, [{"id": "b", "messages": messages, "metadata": {"reference_answer": 2}}])
    wrong = post(server, [{"id": "w", "messages": messages, "reference_answer": 3}])
    assert nova[0]["aggregate_reward_score"] == bedrock[0]["aggregate_reward_score"] == 1.5
    assert wrong[0]["aggregate_reward_score"] == 0.5 and "error" not in nova[0]


def test_client_round_trip_with_batching(server, monkeypatch):
    monkeypatch.setenv("RFT_REWARD_TOKEN", "tok")
    completions = ["ANSWER: 1", "ANSWER: 3", "ANSWER: 3", "nope", "ANSWER: 5"]
    remote = build_reward({"name": "remote", "url": server, "token_env": "RFT_REWARD_TOKEN", "batch_size": 2})
    local = build_reward({"name": "aggregate", "components": {
        "correct": {"name": "math_answer", "mode": "strict_line"}, "format": {"name": "answer_format", "weight": 0.5}}})
    got, want = remote.score_batch(EXAMPLES, completions), local.score_batch(EXAMPLES, completions)
    assert [r.score for r in got] == [r.score for r in want] == [1.5, 0.5, 1.5, 0.0, 1.5]
    assert got[0].components == want[0].components and got[0].error is None


def test_wrong_token_is_a_per_sample_error_without_retries(server):
    start = time.monotonic()
    results = remote_reward_batch(EXAMPLES[:2], ["ANSWER: 1"] * 2, url=server, retries=3, backoff_s=1.0)
    assert all(r.score == 0.0 and "HTTP 401" in r.error and "1 attempt" in r.error for r in results)
    assert time.monotonic() - start < 1.0


class Flaky(BaseHTTPRequestHandler):
    """Test endpoint: 503 for the first `fail` requests, optional delay, tracks concurrency."""
    fail, delay, seen, in_flight, peak = 0, 0.0, 0, 0, 0
    lock = threading.Lock()

    def do_POST(self):
        cls = type(self)
        with cls.lock:
            cls.seen += 1
            cls.in_flight += 1
            cls.peak = max(cls.peak, cls.in_flight)
            failing = cls.seen <= cls.fail
        time.sleep(cls.delay)
        items = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        body = b"" if failing else json.dumps(
            [{"id": it["id"], "aggregate_reward_score": 0.7, "metrics_list": []} for it in items]).encode()
        # Out of flight before the client can see the reply: decremented after it, a loaded machine let the
        # client's next request arrive first and the peak read one over the limit.
        with cls.lock:
            cls.in_flight -= 1
        self.send_response(503 if failing else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def flaky():
    handler = type("H", (Flaky,), {"lock": threading.Lock()})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield handler, f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()


def test_retries_with_backoff_then_succeeds(flaky):
    handler, url = flaky
    handler.fail = 2
    start = time.monotonic()
    results = remote_reward_batch(EXAMPLES[:3], ["x"] * 3, url=url, retries=3, backoff_s=0.05)
    assert [r.score for r in results] == [0.7] * 3 and handler.seen == 3
    assert time.monotonic() - start >= 0.05 + 0.1


def test_gives_up_after_retries_and_contains_the_failure(flaky):
    handler, url = flaky
    handler.fail = 100
    results = remote_reward_batch(EXAMPLES[:2], ["x"] * 2, url=url, retries=2, backoff_s=0.01)
    assert all("HTTP 503" in r.error and "3 attempt" in r.error for r in results) and handler.seen == 3


def test_timeout_and_unreachable_are_per_sample_errors(flaky):
    handler, url = flaky
    handler.delay = 1.0
    slow = remote_reward_batch(EXAMPLES[:1], ["x"], url=url, timeout_s=0.2, retries=0)
    assert slow[0].score == 0.0 and "timed out" in slow[0].error
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    down = remote_reward_batch(EXAMPLES[:1], ["x"], url=f"http://127.0.0.1:{closed}/", retries=1, backoff_s=0.01)
    assert down[0].score == 0.0 and "refused" in down[0].error.lower()


def test_concurrency_limit(flaky):
    handler, url = flaky
    handler.delay = 0.15
    results = remote_reward_batch(EXAMPLES * 2, ["x"] * 10, url=url, batch_size=1, concurrency=3)
    assert len(results) == 10 and all(r.score == 0.7 for r in results)
    assert handler.seen == 10 and handler.peak <= 3


def test_serve_refuses_public_binding_without_token(capsys):
    assert reward_main(["serve", "math_answer", "--host", "0.0.0.0"]) == 2
    assert "bearer token" in capsys.readouterr().err


def test_serve_cli_over_loopback(tmp_path):
    (tmp_path / "plug.py").write_text("def shout(example, completion):\n    return float(completion.isupper())\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{repo}"}
    proc = subprocess.Popen([sys.executable, "-m", "rft_jax.cli", "reward", "serve", "plug:shout", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        results = remote_reward_batch(EXAMPLES[:2], ["HELLO", "hello"], url=f"http://127.0.0.1:{port}/score")
        assert [r.score for r in results] == [1.0, 0.0]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
