"""`math_answer` with GSM8K references: the answer is the number after `####`, commas removed."""

import pytest

from rft_jax.data.example import Example
from rft_jax.rewards.math_answer import math_answer, reference_value, render_reference

SOLUTION = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
            "Natalia sold 48+24 = <<48+24=72>>72 clips altogether.\n#### 72")


def ex(reference):
    return Example(id="x", messages=[{"role": "user", "content": "q"}], reference_answer=reference)


@pytest.mark.parametrize("reference, value", [
    (SOLUTION, "72"),
    ("300 * 4 = 1200\n#### 1,200", "1200"),
    ("Each of 1,000,000 people ...\n#### 1,000,000", "1000000"),
    ({"answer": "So it costs $5.\n#### 5"}, "5"),
    # ordinary references are returned as they are
    (72, 72), ("72", "72"), ("3/4", "3/4"), ("1,234", "1,234"),
])
def test_reference_value_reads_the_gsm8k_final_answer(reference, value):
    assert reference_value(reference) == value


@pytest.mark.parametrize("completion, mode, score", [
    ("24 in May, so 48 + 24.\nANSWER: 72", "strict_line", 1.0),
    ("ANSWER: 71", "strict_line", 0.0),
    ("ANSWER: 72.0", "strict_line", 0.0),  # the reference 72 is an integer: strict wants an integer literal
    ("She sold 72 clips.\n#### 72", "auto", 1.0),
    ("so the total is 72 clips", "last_number", 1.0),
    ("so the total is 48 clips", "last_number", 0.0),
])
def test_gsm8k_reference_scores_completions(completion, mode, score):
    assert math_answer(ex(SOLUTION), completion, mode=mode).score == score


def test_thousands_reference_and_rendered_reference():
    reference = "300 * 4 = 1200\n#### 1,200"
    assert math_answer(ex(reference), "ANSWER: 1200", mode="strict_line").score == 1.0
    assert math_answer(ex(reference), "#### 1,200", mode="hash").score == 1.0
    assert render_reference(ex(SOLUTION)) == "ANSWER: 72"


def test_ordinary_references_still_work():
    assert math_answer(ex(72), "ANSWER: 72", mode="strict_line").score == 1.0
    assert math_answer(ex("0.5"), "The answer is \\boxed{\\frac{1}{2}}", mode="boxed").score == 1.0
    assert math_answer(ex("$1,234"), "ANSWER: 1234", mode="answer_line").score == 1.0
    assert math_answer(ex("12"), "ANSWER: 13", mode="answer_line").score == 0.0
