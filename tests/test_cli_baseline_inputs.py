"""`rft-jax baseline` on the inputs users bring: a bad file, an empty one, a test set that repeats a prompt.

The model and tokenizer are a tiny random model and a character tokenizer, so each run takes seconds.
"""

from __future__ import annotations

import json

import jax
import pytest

import rft_jax.model
import rft_jax.model.tokenizer
from rft_jax.cli.baseline import main as baseline_main
from rft_jax.model import ModelConfig, init_params

CFG = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                  head_dim=8)


class CharTokenizer:
    """One token per character of the last turn; ids 0 and 1 are padding and end of sequence."""

    eos_ids, pad_id = (1,), 0

    def apply_chat_template(self, messages, tools=None, add_generation_prompt=True):
        return [2 + ord(ch) % 62 for ch in messages[-1]["content"]][:16]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(ord("a") + i % 26) for i in ids)


@pytest.fixture
def tiny(monkeypatch):
    """`rft-jax baseline --model tiny` loads the tiny model and the character tokenizer."""
    params = init_params(CFG, jax.random.key(0), std=0.3)
    monkeypatch.setattr(rft_jax.model, "load_model", lambda name, dtype=None: (CFG, params))
    monkeypatch.setattr(rft_jax.model.tokenizer, "load_tokenizer", lambda name: CharTokenizer())


def record(i: int, question: str) -> str:
    return json.dumps({"id": f"q{i}", "messages": [{"role": "user", "content": question}]})


def run(data, tmp_path, *extra: str) -> int:
    return baseline_main(["--model", "tiny", "--data", str(data), "--reward", "tests.toy_rewards:brevity",
                          "--samples", "2", "--max-new-tokens", "2", "--out", str(tmp_path / "baseline.json"),
                          *extra])


def test_a_bad_file_is_a_message_naming_the_line(tiny, tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text(record(1, "2 + 2?") + '\n{"messages": []}\n')
    assert run(data, tmp_path) == 2
    err = capsys.readouterr().err
    assert err.startswith("rft-jax baseline: ") and f"{data}:2: messages" in err and "Traceback" not in err


def test_a_missing_file_is_a_message(tiny, tmp_path, capsys):
    assert run(tmp_path / "nowhere.jsonl", tmp_path) == 2
    assert "nowhere.jsonl" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["", "\n\n"])
def test_an_empty_file_is_a_message(text, tiny, tmp_path, capsys):
    data = tmp_path / "empty.jsonl"
    data.write_text(text)
    assert run(data, tmp_path) == 2
    assert f"{data} holds no examples" in capsys.readouterr().err
    assert not (tmp_path / "baseline.json").exists()


def test_a_test_set_may_repeat_a_prompt_with_a_warning(tiny, tmp_path, capsys):
    data = tmp_path / "test.jsonl"
    data.write_text("\n".join([record(1, "2 + 2?"), record(2, "3 + 3?"), record(3, "2  + 2?"),
                               record(4, "3 + 3?")]))
    rc = run(data, tmp_path)
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "warning" in err and "2 duplicate prompts" in err and "q3" in err and "q4" in err
    assert len(json.loads((tmp_path / "baseline.json").read_text())["samples"]) == 4
