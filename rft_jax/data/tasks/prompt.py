"""Prompt wording shared by the task generators.

The wording is data, not code, because the default experiment tunes it: the
system prompt and the instruction appended to each question are fields here.
"""

from __future__ import annotations

import dataclasses

ANSWER_INSTRUCTION = "Give the final answer on the last line as `ANSWER: <number>`."


@dataclasses.dataclass(frozen=True)
class PromptStyle:
    system: str | None = None
    """System prompt; None for no system turn."""
    instruction: str = ANSWER_INSTRUCTION
    """Appended to every question after a blank line; empty for none."""

    def messages(self, question: str) -> list[dict]:
        user = f"{question}\n\n{self.instruction}" if self.instruction else question
        turns = [{"role": "system", "content": self.system}] if self.system else []
        return turns + [{"role": "user", "content": user}]
