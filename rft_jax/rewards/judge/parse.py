"""Reading a verdict out of free judge text: a number in range, a label from a list, or JSON per criterion.

Judges wrap their verdict in prose, markdown and code fences, so each rule
tries the explicit forms first ("Score: 7", "7/10", "Verdict: good", a JSON
object) and falls back only to unambiguous ones. Anything else raises
`JudgeParseError`: an unreadable verdict is a reward error, never a silent 0.
"""

from __future__ import annotations

import json
import re

from rft_jax.rewards.judge.rubric import Rubric

NUMBER = r"[-+]?\d+(?:\.\d+)?"
_NUM = re.compile(NUMBER)


class JudgeParseError(ValueError):
    """The judge's reply holds no readable verdict."""


def _in_range(value: float, rubric: Rubric, what: str = "score") -> float:
    lo, hi = rubric.scale
    if not lo <= value <= hi:
        raise JudgeParseError(f"{what} {value:g} is outside the rubric's range [{lo:g}, {hi:g}]")
    return value


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def parse_number(text: str, rubric: Rubric) -> float:
    """A score in the rubric's range, normalised to [0, 1]."""
    hi = rubric.scale[1]
    patterns = [rf"\bscore(?:\s+(?:of|is))?\W{{0,6}}?({NUMBER})",
                rf"({NUMBER})\s*(?:/|out of)\s*{hi:g}\b",
                rf"\W*({NUMBER})\W*"]
    for i, pattern in enumerate(patterns):
        if i == 2:
            match = re.fullmatch(pattern, text.strip())
            found = [match.group(1)] if match else []
        else:
            found = re.findall(pattern, text, flags=re.IGNORECASE)
        if found:
            return rubric.normalise(_in_range(float(found[-1]), rubric))
    numbers = _NUM.findall(_last_line(text))
    if len(numbers) == 1:
        return rubric.normalise(_in_range(float(numbers[0]), rubric))
    raise JudgeParseError(f"no score found in the judge's reply: {text.strip()[-200:]!r}")


def parse_label(text: str, rubric: Rubric, keywords: str = "verdict|label|rating|grade|answer|winner",
                loose: bool = True) -> float:
    """The score of the verdict label (longest labels matched first, so 'very good' beats 'good').

    `loose` also accepts a label that is the only one the reply mentions; pairwise
    verdicts turn it off, since "A" is also an English word."""
    names = sorted((name for name, _ in rubric.labels), key=len, reverse=True)
    values = {name.lower(): value for name, value in rubric.labels}
    alternation = "|".join(re.escape(n) for n in names)
    explicit = re.findall(rf"\b(?:{keywords})\b\W{{0,6}}?({alternation})\b", text, flags=re.IGNORECASE)
    if explicit:
        return values[explicit[-1].lower()]
    last = re.sub(r"^\W+|\W+$", "", _last_line(text)).lower()
    if last in values:
        return values[last]
    mentioned = {m.lower() for m in re.findall(rf"\b({alternation})\b", text, flags=re.IGNORECASE)}
    if loose and len(mentioned) == 1:
        return values[mentioned.pop()]
    what = "several labels" if mentioned else "no label"
    raise JudgeParseError(f"{what} of {names} in the judge's reply: {text.strip()[-200:]!r}")


def find_json_object(text: str) -> dict:
    """The last JSON object in the text (bare, in prose, or in a ```json fence)."""
    decoder = json.JSONDecoder()
    found = None
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            found = value
    if found is None:
        raise JudgeParseError(f"no JSON object in the judge's reply: {text.strip()[-200:]!r}")
    return found


def _number_value(obj: dict, key: str) -> float:
    lowered = {str(k).lower(): v for k, v in obj.items()}
    value = lowered.get(key.lower())
    if isinstance(value, dict):  # {"accuracy": {"score": 4, "reason": "..."}}
        value = {str(k).lower(): v for k, v in value.items()}.get("score")
    if isinstance(value, str) and re.fullmatch(NUMBER, value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise JudgeParseError(f"the judge's JSON has no number for {key!r}: {json.dumps(obj)[:200]}")
    return float(value)


def parse_json(text: str, rubric: Rubric) -> tuple[float, dict[str, float]]:
    """(weighted mean of normalised criterion scores, {criterion: normalised score})."""
    obj = find_json_object(text)
    if not rubric.criteria:
        return rubric.normalise(_in_range(_number_value(obj, "score"), rubric)), {}
    parts = {c.name: rubric.normalise(_in_range(_number_value(obj, c.name), rubric, c.name)) for c in rubric.criteria}
    total = sum(c.weight for c in rubric.criteria)
    return sum(c.weight * parts[c.name] for c in rubric.criteria) / total, parts


PARSE_RULES = ("auto", "number", "label", "json")


def parse_verdict(text: str, rubric: Rubric, rule: str = "auto") -> tuple[float, dict[str, float]]:
    """(score in [0, 1], per-criterion scores) by the named rule; `auto` follows the rubric's form."""
    rule = rubric.default_parse() if rule == "auto" else rule
    if rule == "number":
        return parse_number(text, rubric), {}
    if rule == "label":
        if not rubric.labels:
            raise ValueError("parse rule 'label' needs a rubric with 'labels'")
        return parse_label(text, rubric), {}
    if rule == "json":
        return parse_json(text, rubric)
    raise ValueError(f"unknown parse rule {rule!r}; choose from {PARSE_RULES}")
