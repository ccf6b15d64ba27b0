"""`math_answer`: extract the final answer and compare it numerically with the reference.

Modes name where the answer is read from (see answer_extraction). `strict_line` is
the default experiment's strict metric: the last non-empty line must be
`ANSWER: <number>`, written as a plain integer when the reference is an integer.
`last_number` is the loose metric. A GSM8K reference (`... #### 72`) is read as its final number.
"""

from __future__ import annotations

import re

from rft_jax.data.example import Example
from rft_jax.rewards.answer_extraction import extract_answer, hash_answer
from rft_jax.rewards.numbers import numbers_equal, parse_number
from rft_jax.rewards.result import RewardResult

_PLAIN_INT = re.compile(r"[-+]?\d+")
_PLAIN_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def math_answer(example: Example, completion: str, *, mode: str = "auto", rel_tol: float = 1e-6,
                abs_tol: float = 1e-9, symbolic: bool = False, format_credit: float = 0.0,
                fallback_last_number: bool = False) -> RewardResult:
    """1.0 when the extracted answer equals the reference; `format_credit` when an answer was
    found in the right place but is wrong; 0.0 when none was found."""
    reference = reference_value(example.reference_answer)
    answer = extract_answer(completion, mode)
    if answer is None and fallback_last_number and mode != "last_number":
        answer = extract_answer(completion, "last_number")
    if answer is None:
        return RewardResult(0.0, metrics={"format_ok": 0.0, "correct": 0.0})
    if mode == "strict_line" and not strict_form_ok(answer, reference):
        return RewardResult(0.0, metrics={"format_ok": 0.0, "correct": 0.0})
    correct = answers_equal(answer, reference, rel_tol=rel_tol, abs_tol=abs_tol, symbolic=symbolic)
    return RewardResult(1.0 if correct else format_credit, metrics={"format_ok": 1.0, "correct": float(correct)})


def reference_value(reference: object) -> object:
    """The answer a completion is compared with. A GSM8K-style reference is a worked solution
    ending in `#### 72`: only what follows the marker is the answer, thousands commas removed."""
    if isinstance(reference, dict) and "answer" in reference:
        reference = reference["answer"]
    if isinstance(reference, str):
        final = hash_answer(reference)
        if final is not None:
            return final.replace(",", "")
    return reference


def strict_form_ok(answer: str, reference: object) -> bool:
    integer_reference = isinstance(reference, int) or (
        isinstance(reference, str) and _PLAIN_INT.fullmatch(reference.strip()))
    return bool((_PLAIN_INT if integer_reference else _PLAIN_NUMBER).fullmatch(answer))


def answers_equal(answer: str, reference: object, *, rel_tol: float, abs_tol: float, symbolic: bool) -> bool:
    ref_text = str(reference)
    predicted, expected = parse_number(answer), parse_number(ref_text)
    if predicted is not None and expected is not None:
        return numbers_equal(predicted, expected, rel_tol=rel_tol, abs_tol=abs_tol)
    if symbolic:
        return symbolically_equal(answer, ref_text)
    return " ".join(answer.lower().split()) == " ".join(ref_text.lower().split())


def symbolically_equal(a: str, b: str, max_chars: int = 200) -> bool:
    """sympy equivalence (simplify(a - b) == 0) for short expressions; False when unparsable."""
    if len(a) > max_chars or len(b) > max_chars:
        return False
    import sympy  # lazy: slow to import and only needed when asked for
    from sympy.parsing.sympy_parser import implicit_multiplication_application, parse_expr, standard_transformations

    transformations = standard_transformations + (implicit_multiplication_application,)

    def parse(text: str):
        t = re.sub(r"\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}", r"((\1)/(\2))", text.strip().strip("$"))
        t = re.sub(r"\\sqrt\{([^{}]+)\}", r"sqrt(\1)", t).replace("\\pi", "pi").replace("^", "**")
        t = t.replace("\\cdot", "*").replace("\\times", "*").replace("{", "(").replace("}", ")")
        return parse_expr(t, transformations=transformations, evaluate=True)

    try:
        return bool(sympy.simplify(parse(a) - parse(b)) == 0)
    except Exception:  # sympy raises many types on odd input; unparsable means not equal
        return False


def render_reference(example: Example) -> str:
    return f"ANSWER: {reference_value(example.reference_answer)}"
