"""Reading a number the way a model writes it: "$1,234.50", "12%", "3/4", "1 1/2", "2.5e3",
"-7 apples", "\\frac{3}{4}", "1.5 \\times 10^{3}".

Returns candidate values rather than one, because "50%" may mean 50 or 0.5 and the
grader should accept either when the reference says which.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

_NUMBER = re.compile(r"^[-+]?(?:(?P<whole>\d+)\s+(?P<num>\d+)/(?P<den>\d+)|\d+/\d+|(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)")
_REPLACEMENTS = [
    (re.compile(r"\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}"), r"(\1)/(\2)"),
    (re.compile(r"\\text\{[^{}]*\}|\\mathrm\{[^{}]*\}"), " "),
    (re.compile(r"\s*(?:\\times|×|x|\*|·)\s*10\s*\^\s*\{?\s*([-+]?\d+)\s*\}?", re.I), r"e\1"),
    (re.compile(r"(?<=\d),(?=\d{3}(?!\d))"), ""),  # thousands separators
    (re.compile(r"(?<=\d)[ _](?=\d{3}(?!\d))"), ""),  # "1 000 000"
]
_CURRENCY = re.compile(r"^(?:[$€£¥₹]|usd|eur|gbp|rs\.?)\s*", re.I)


def normalize(text: str) -> str:
    t = text.strip().replace("\u2212", "-").replace("\\$", "$").replace("\\%", "%").replace("\\!", "")
    t = t.strip("`*$ \t").rstrip(".").replace("\\left", "").replace("\\right", "")
    for pattern, repl in _REPLACEMENTS:
        t = pattern.sub(repl, t)
    return t.strip()


def parse_number(text: str) -> list[float] | None:
    """Candidate values of the leading number in `text` (units and currency ignored), or None."""
    t = normalize(text)
    sign = ""
    if t[:1] in "+-":
        sign, t = t[0], t[1:].lstrip()
    t = _CURRENCY.sub("", t)
    t = re.sub(r"^\((\d+)\)/\((\d+)\)", r"\1/\2", t)
    match = _NUMBER.match(sign + t)
    if not match:
        return None
    token = match.group(0)
    try:
        if match.group("whole"):
            mag = int(match.group("whole")) + Fraction(int(match.group("num")), int(match.group("den")))
            value = float(-mag if token.startswith("-") else mag)
        elif "/" in token:
            value = float(Fraction(token.replace("+", "")))
        else:
            value = float(token)
    except (ValueError, ZeroDivisionError):
        return None
    if not math.isfinite(value):
        return None
    rest = (sign + t)[len(token):].strip()
    if rest.startswith("%") or rest.lower().startswith("percent"):
        return [value, value / 100]
    return [value]


def numbers_equal(predicted: list[float], reference: list[float], *, rel_tol: float, abs_tol: float) -> bool:
    return any(math.isclose(p, r, rel_tol=rel_tol, abs_tol=abs_tol) for p in predicted for r in reference)


LAST_NUMBER = re.compile(r"[-+\u2212]?\$?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?%?")


def last_number_text(text: str) -> str | None:
    found = LAST_NUMBER.findall(text)
    return found[-1].rstrip(",") if found else None
