"""benchmarks/server_load.py at a tiny scale: the real `rft-jax reward serve` CLI under 8 loopback clients."""

import pytest

from benchmarks.server_load import markdown, run_target


def test_reward_server_under_load_with_slow_clients():
    # 8 clients for 5 s; a byte-by-byte body and a byte-by-byte reader run for 2 s in the middle.
    result = run_target("reward", clients=8, seconds=5.0, slow_seconds=2.0, slow_interval=0.1, ready_timeout_s=30.0)
    assert result["errors"] == 0, result["error_kinds"]
    assert result["requests"] > 8 and result["server_alive"]
    assert result["requests_during_slow"] > 0 and not result["stalled"], result
    assert result["p99_during_slow_s"] < 2.0  # a batch of 8 scores in milliseconds; a stall would take the 2 s window
    assert result["slow_body_status"].endswith("200 OK") and result["slow_reader_status"].endswith("200 OK")
    assert "| reward | 8 |" in markdown([result])


@pytest.mark.slow
def test_chat_server_under_load():
    # Loads SmolLM2-135M and compiles its batch shapes: about a minute on a 2-core CPU.
    result = run_target("chat", clients=4, seconds=20.0, slow_seconds=4.0, slow_interval=0.2)
    assert result["errors"] == 0, result["error_kinds"]
    assert result["requests"] >= 4 and result["server_alive"]
    assert result["slow_body_status"].endswith("200 OK")
