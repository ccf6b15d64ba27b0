"""math_answer: extraction modes, number formats, tolerance, symbolic equivalence, partial credit."""

import pytest

from rft_jax.data import Example
from rft_jax.rewards import build_reward
from rft_jax.rewards.answer_extraction import boxed, extract_answer
from rft_jax.rewards.math_answer import math_answer
from rft_jax.rewards.numbers import parse_number


def ex(reference):
    return Example(id="x", messages=[{"role": "user", "content": "q"}], reference_answer=reference)


@pytest.mark.parametrize("text,value", [
    ("1,234", 1234), ("$1,234.50", 1234.5), ("-7 apples", -7), ("\u22125", -5), ("3/4", 0.75),
    ("1 1/2", 1.5), ("2.5e3", 2500), ("1.5 \\times 10^{3}", 1500), ("\\frac{3}{4}", 0.75), ("€12", 12),
    ("12 km", 12), (".5", 0.5), ("1 000 000", 1_000_000), ("**42**", 42),
])
def test_parse_number_formats(text, value):
    assert parse_number(text) == [pytest.approx(value)]


def test_percent_accepts_both_readings_and_non_numbers_are_none():
    assert parse_number("50%") == [50.0, 0.5]
    assert parse_number("about") is None


def test_extractors():
    text = "Work...\nANSWER: 12\nsome more\n\\boxed{\\frac{1}{2}}\n#### 7"
    assert extract_answer(text, "answer_line") == "12"
    assert extract_answer(text, "boxed") == "\\frac{1}{2}"
    assert extract_answer(text, "hash") == "7"
    assert extract_answer(text, "last_number") == "7"
    assert extract_answer(text, "strict_line") is None  # last line is not ANSWER:
    assert boxed("\\boxed{a{b}c}") == "a{b}c"


STRICT = [
    ("Steps...\nANSWER: 42", 1.0),
    ("ANSWER: 42\n\n  ", 1.0),          # trailing blank lines are fine
    ("ANSWER: 42\nThanks!", 0.0),        # not the last non-empty line
    ("ANSWER: 42.0", 0.0),               # integer reference needs an integer literal
    ("ANSWER: 41", 0.0),
    ("answer: 42", 0.0),
    ("The answer is 42", 0.0),
]


@pytest.mark.parametrize("completion,score", STRICT)
def test_strict_line_is_the_default_experiments_strict_metric(completion, score):
    assert math_answer(ex(42), completion, mode="strict_line").score == score


@pytest.mark.parametrize("completion,score", [("so 40 + 2 = 42", 1.0), ("42 then 41", 0.0), ("no number", 0.0),
                                              ("ANSWER: 42\nThanks!", 1.0)])
def test_last_number_is_the_loose_metric(completion, score):
    assert math_answer(ex(42), completion, mode="last_number").score == score


def test_auto_mode_formats_and_tolerance():
    assert math_answer(ex(1234.5), "**Answer:** $1,234.50").score == 1.0
    assert math_answer(ex("0.5"), "\\boxed{\\frac{1}{2}}").score == 1.0
    assert math_answer(ex(0.25), "ANSWER: 25%").score == 1.0
    assert math_answer(ex(3.14159), "ANSWER: 3.1416", rel_tol=1e-4).score == 1.0
    assert math_answer(ex(3.14159), "ANSWER: 3.1416").score == 0.0
    assert math_answer(ex(7), "the result is 7").score == 0.0
    assert math_answer(ex(7), "the result is 7", fallback_last_number=True).score == 1.0


def test_symbolic_equivalence_only_when_asked():
    assert math_answer(ex("2*sqrt(2)"), "ANSWER: \\sqrt{8}", symbolic=True).score == 1.0
    assert math_answer(ex("x^2 + 2x + 1"), "ANSWER: (x+1)^2", symbolic=True).score == 1.0
    assert math_answer(ex("x^2 + 2x + 1"), "ANSWER: (x+1)^2").score == 0.0
    assert math_answer(ex("x+1"), "ANSWER: x+2", symbolic=True).score == 0.0


def test_format_credit_for_right_place_wrong_value():
    result = math_answer(ex(42), "ANSWER: 41", mode="strict_line", format_credit=0.1)
    assert result.score == 0.1 and result.metrics == {"format_ok": 1.0, "correct": 0.0}
    assert math_answer(ex(42), "41", mode="strict_line", format_credit=0.1).score == 0.0


def test_answer_format_reward_checks_only_the_format():
    fmt = build_reward("answer_format")
    out = fmt.score_batch([ex(1)] * 4, ["x\nANSWER: 99", "ANSWER: -3", "ANSWER: 9.5", "ANSWER: 9\nbye"])
    assert [r.score for r in out] == [1.0, 1.0, 0.0, 0.0]
