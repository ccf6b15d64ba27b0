"""The RFT JSONL format: every validation problem is reported with line, field and fix."""

import json

import pytest

from rft_jax.cli.data import main as data_main
from rft_jax.data import DatasetError, Example, load_dataset, validate_lines
from rft_jax.data.example import stable_id


class CharTokenizer:
    """Fake chat tokenizer: one token per character of the rendered prompt."""

    def apply_chat_template(self, messages, tools=None, add_generation_prompt=True):
        text = "".join(f"<{m['role']}>{m['content']}" for m in messages)
        text += "<assistant>" if add_generation_prompt else ""
        return list(range(len(text)))


def user(text):
    return {"role": "user", "content": text}


def line(**record):
    return json.dumps(record)


def problems_of(lines, **kwargs):
    return [(p.line, p.field, p.severity) for p in validate_lines(lines, **kwargs).problems]


def test_valid_file_round_trips_fields_and_keeps_metadata():
    result = validate_lines([line(messages=[{"role": "system", "content": "be brief"}, user("2+2?")],
                                  reference_answer=4, difficulty=1, data_source="x"),
                             line(id="q2", messages=[user([{"type": "text", "text": "3+3?"}])],
                                  reference_answer={"answer": 6})])
    assert result.problems == []
    first, second = result.examples
    assert first.metadata == {"difficulty": 1, "data_source": "x"}
    assert first.reference_answer == 4 and first.id.startswith("ex-")
    assert second.id == "q2" and second.reference_answer == {"answer": 6}


def test_generated_id_is_stable_and_content_derived():
    messages = [user("hi")]
    assert stable_id(messages, 1) == stable_id([user("hi")], 1)
    assert stable_id(messages, 1) != stable_id(messages, 2)


def test_prompt_messages_stop_at_last_user_turn():
    ex = Example(id="a", messages=[user("q"), {"role": "assistant", "content": "a"}, user("q2"),
                                   {"role": "assistant", "content": "demo"}])
    assert [m["content"] for m in ex.prompt_messages] == ["q", "a", "q2"]


def test_every_problem_reported_with_line_and_field():
    lines = [
        "{not json",
        line(messages=[{"role": "assistant", "content": "hi"}, user("x")]),
        line(messages=[user("  ")]),
        line(messages=[{"role": "wizard", "content": "x"}]),
        line(messages=[user("a"), {"role": "system", "content": "late"}]),
        line(messages=[user("dup prompt")], id="same"),
        line(messages=[user("dup  prompt")], id="other"),
        line(messages=[user("another")], id="same"),
        line(messages=[user("tool misuse"), {"role": "tool", "content": "42"}]),
        line(messages=[{"role": "system", "content": "only system"}]),
        "[1, 2]",
    ]
    found = problems_of(lines)
    assert (1, "(line)", "error") in found
    assert (2, "messages[0].role", "error") in found
    assert (3, "messages[0].content", "error") in found
    assert (4, "messages[0].role", "error") in found
    assert (5, "messages[1].role", "error") in found
    assert (7, "messages", "error") in found  # duplicate prompt, whitespace-normalised
    assert (8, "id", "error") in found
    assert (9, "messages[1].role", "error") in found
    assert (10, "messages", "error") in found
    assert (11, "(line)", "error") in found


def test_missing_reference_only_when_required():
    lines = [line(messages=[user("x")])]
    assert problems_of(lines) == []
    assert problems_of(lines, require_reference=True) == [(1, "reference_answer", "error")]


def test_prompt_length_limit_uses_tokenizer_chat_template():
    lines = [line(messages=[user("short")]), line(messages=[user("x" * 100)])]
    result = validate_lines(lines, tokenizer=CharTokenizer(), max_prompt_tokens=50)
    assert [(p.line, p.field) for p in result.problems] == [(2, "messages")]
    assert result.prompt_tokens[0] == len("<user>short<assistant>")


def test_load_dataset_raises_with_file_line_field_fix(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(line(messages=[user("ok")], reference_answer=1) + "\n" + line(messages=[]) + "\n")
    with pytest.raises(DatasetError) as err:
        load_dataset(str(path))
    message = str(err.value)
    assert f"{path}:2: messages: must be a non-empty list" in message and "->" in message
    assert len(err.value.problems) == 1


def test_load_dataset_accepts_what_validate_accepts(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(line(messages=[user("ok")], reference_answer=1) + "\n\n")
    assert [e.reference_answer for e in load_dataset(str(path), require_reference=True)] == [1]


def test_validate_cli_exit_status_and_summary(tmp_path, capsys):
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text("\n".join(line(messages=[user(f"q{i}")], reference_answer=i, level="a") for i in range(3)))
    bad.write_text(line(messages=[user("q")]) + "\n")
    assert data_main(["validate", str(good)]) == 0
    out = capsys.readouterr().out
    assert "examples: 3" in out and "below the recommended 100-10000" in out and "level (3)" in out
    assert data_main(["validate", str(bad), "--reward", "math_answer"]) == 1
    assert "reference_answer: missing" in capsys.readouterr().out
    assert data_main(["validate", str(bad), "--reward", "answer_format"]) == 0


def test_data_and_reward_commands_do_not_import_jax():
    import subprocess
    import sys
    code = ("import sys, rft_jax.cli, rft_jax.cli.data, rft_jax.cli.reward, rft_jax.rewards.registry; "
            "sys.exit('jax' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
