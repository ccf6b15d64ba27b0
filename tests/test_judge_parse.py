"""Reading verdicts out of judge replies, and rubric forms."""

from __future__ import annotations

import pytest

from rft_jax.rewards.judge.parse import JudgeParseError, parse_verdict
from rft_jax.rewards.judge.rubric import parse_rubric

SCALE = parse_rubric({"text": "t", "scale": [1, 10]})
LABELS = parse_rubric({"text": "t", "labels": {"very good": 1.0, "good": 0.75, "ok": 0.5, "bad": 0.0}})
CRITERIA = parse_rubric({"text": "t", "scale": [0, 5],
                         "criteria": {"accuracy": {"weight": 3, "description": "facts"}, "tone": 1}})


@pytest.mark.parametrize("reply, expected", [
    ("Score: 7", 6 / 9),
    ("The reply is fine.\n\n**Score:** 10", 1.0),
    ("I would give it a score of 4 because ...", 3 / 9),
    ("Rating: 8/10", 7 / 9),
    ("8 out of 10", 7 / 9),
    ("  5. ", 4 / 9),
    ("There are 3 issues.\nOverall I rate it 2", 1 / 9),
    ('{"score": 1}', 0.0),
])
def test_numbers(reply, expected):
    assert parse_verdict(reply, SCALE)[0] == pytest.approx(expected)


@pytest.mark.parametrize("reply", ["Looks great!", "Score: 11", "Score: 0", "It has 3 bugs and 2 typos, overall fine"])
def test_unreadable_or_out_of_range_numbers_raise(reply):
    with pytest.raises(JudgeParseError):
        parse_verdict(reply, SCALE)


@pytest.mark.parametrize("reply, expected", [
    ("Verdict: good", 0.75),
    ("Not bad at all. Verdict: **very good**", 1.0),
    ("The tone is ok but... \nbad", 0.0),
    ("This answer is very good, I think.", 1.0),
])
def test_labels(reply, expected):
    assert parse_verdict(reply, LABELS)[0] == expected


def test_ambiguous_label_raises():
    with pytest.raises(JudgeParseError, match="several"):
        parse_verdict("Some parts are good, some are bad, hard to say.", LABELS)


def test_json_per_criterion():
    reply = 'Here is my grading:\n```json\n{"accuracy": 5, "Tone": "3", "notes": "x"}\n```'
    score, parts = parse_verdict(reply, CRITERIA)
    assert parts == {"accuracy": 1.0, "tone": 0.6}
    assert score == pytest.approx((3 * 1.0 + 1 * 0.6) / 4)
    with pytest.raises(JudgeParseError, match="tone"):
        parse_verdict('{"accuracy": 5}', CRITERIA)
    with pytest.raises(JudgeParseError, match="outside"):
        parse_verdict('{"accuracy": 9, "tone": 1}', CRITERIA)


def test_rubric_forms():
    assert parse_rubric("Be nice.").default_parse() == "number"
    assert parse_rubric({"text": "x", "labels": ["great", "meh", "awful"]}).labels == (
        ("great", 1.0), ("meh", 0.5), ("awful", 0.0))
    with pytest.raises(ValueError, match="unknown rubric keys"):
        parse_rubric({"text": "x", "scal": [1, 5]})
    with pytest.raises(ValueError, match="low < high"):
        parse_rubric({"text": "x", "scale": [5, 1]})
