"""The judge's prompt: rubric, the example's conversation, the reference answer if any, and the response(s).

The output-format instruction is generated from the rubric and the parse rule,
so what the judge is asked to write is exactly what `parse.py` reads back.
"""

from __future__ import annotations

from rft_jax.data.example import Example, message_text
from rft_jax.rewards.judge.rubric import Rubric

SYSTEM = ("You are a strict, impartial grader. You judge an assistant's response against a rubric. "
          "Be consistent: the same response always gets the same verdict. Follow the output format exactly.")
PAIR_SYSTEM = ("You are a strict, impartial judge comparing two assistant responses against a rubric. "
               "Ignore the order in which they are shown and their length unless the rubric asks about length. "
               "Follow the output format exactly.")


def render_conversation(example: Example) -> str:
    return "\n\n".join(f"[{m.get('role', 'user')}]\n{message_text(m)}" for m in example.prompt_messages)


def rubric_section(rubric: Rubric) -> str:
    lines = ["# Rubric", rubric.text]
    if rubric.criteria:
        lines += ["", "Criteria:"]
        lines += [f"- {c.name} (weight {c.weight:g})" + (f": {c.description}" if c.description else "")
                  for c in rubric.criteria]
    return "\n".join(lines)


def format_instruction(rubric: Rubric, rule: str) -> str:
    lo, hi = (f"{x:g}" for x in rubric.scale)
    rule = rubric.default_parse() if rule == "auto" else rule
    if rule == "label":
        names = ", ".join(name for name, _ in rubric.labels)
        return f"End your reply with a line `Verdict: LABEL`, where LABEL is one of: {names}."
    if rule == "json":
        keys = [c.name for c in rubric.criteria] or ["score"]
        shape = ", ".join(f'"{k}": N' for k in keys)
        return f"Reply with only a JSON object {{{shape}}}, where each N is a number from {lo} to {hi} ({hi} is best)."
    return f"End your reply with a line `Score: N`, where N is a number from {lo} to {hi} ({hi} is best)."


def _reference(example: Example) -> list[str]:
    if example.reference_answer is None:
        return []
    return ["# Reference answer (a correct or ideal answer, for comparison)", str(example.reference_answer), ""]


def pointwise_messages(rubric: Rubric, rule: str, example: Example, completion: str) -> list[dict]:
    """Chat messages asking the judge to grade one completion."""
    body = [rubric_section(rubric), "", "# Conversation", render_conversation(example), "", *_reference(example),
            "# Response to grade", "<response>", completion, "</response>", "", "# Output format",
            format_instruction(rubric, rule)]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(body)}]


def pairwise_messages(rubric: Rubric, example: Example, first: str, second: str, *, show_reference: bool) -> list[dict]:
    """Chat messages asking which of two responses better meets the rubric."""
    body = [rubric_section(rubric), "", "# Conversation", render_conversation(example), "",
            *(_reference(example) if show_reference else []),
            "# Response A", "<response_a>", first, "</response_a>", "",
            "# Response B", "<response_b>", second, "</response_b>", "", "# Output format",
            "End your reply with a line `Winner: A`, `Winner: B` or `Winner: tie`."]
    return [{"role": "system", "content": PAIR_SYSTEM}, {"role": "user", "content": "\n".join(body)}]
