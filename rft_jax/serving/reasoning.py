"""Reasoning mode in the server: prompts rendered with the plan, the think budget forced on the host, the text split.

The engine steps on the host, so the think budget is a small state machine
per slot (`ThinkState`) that mirrors the jitted sampler's `_force`
(rft_jax/sampling/sampler.py): count the model's thinking tokens, stop counting
once they end with the closing tag, and at the budget feed and emit the forced
ids (closing tag + cue) one per step in place of the sampled tokens. The
answer then gets the request's max_tokens, forced tokens included, as the
sampler's answer_budget does.

The response splits the text at the first closing tag exactly as training and
evaluation read it (`split_reasoning`); `ReasoningStream` does the same split
on a stream, holding back text that could still turn out to be a tag, so the
streamed deltas join to the non-streamed fields.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from rft_jax.data.reasoning import EFFORT_BUDGETS, ReasoningPlan
from rft_jax.serving.protocol import ChatRequest, RequestError
from rft_jax.serving.text_stream import held_back


class ThinkBudget(NamedTuple):
    """One request's think budget: at most `tokens` thinking tokens, then `forced_ids` (closing tag + cue) are
    written in place of sampled ones; `close_variants` are the closing tag's spellings (as its tokenizer may
    split it) the model may write itself before that."""

    tokens: int
    forced_ids: tuple[int, ...]
    close_variants: tuple[tuple[int, ...], ...]


@dataclasses.dataclass
class ThinkState:
    """Where one sequence is in its thinking; `next` turns each sampled token into the token to emit and feed."""

    budget: ThinkBudget
    thought: int = 0  # thinking tokens so far, the model's own closing tag included (as the sampler counts)
    forced: int = 0  # forced tokens written so far
    answering: bool = False
    recent: tuple[int, ...] = ()  # the last thinking tokens (as many as the longest closing variant)

    def next(self, sampled: int) -> tuple[int, bool]:
        """(token, counts as thinking). At the budget the sampled token is dropped for the next forced one."""
        if self.answering:
            return sampled, False
        b = self.budget
        if self.thought >= b.tokens:
            token = b.forced_ids[self.forced]
            self.forced += 1
            self.answering = self.forced >= len(b.forced_ids)
            return token, False
        self.thought += 1
        self.recent = (self.recent + (sampled,))[-max(map(len, b.close_variants)):]
        self.answering = any(self.recent[-len(v):] == v for v in b.close_variants)
        return sampled, True


class ReasoningStream:
    """Text deltas in, (thinking, answer) deltas out; the deltas join to `split_reasoning` of the whole text.

    Incremental: only text that could still change meaning is held back (a
    start that may become the opening tag, an end that may become the closing
    tag, trailing whitespace that the final split trims), so a delta costs its
    own length, not the length of everything streamed before it.
    """

    def __init__(self, open_tag: str, close_tag: str):
        self.open_tag, self.close_tag = open_tag, close_tag
        self.part = "start"  # "start" (nothing shown: maybe the opening tag), "thinking" or "answer"
        self.pending = ""  # held back, not yet shown
        self.begun = False  # the current part has shown text (its leading whitespace is trimmed)

    def push(self, delta: str) -> tuple[str, str]:
        return self._feed(delta, final=False)

    def finish(self, delta: str = "") -> tuple[str, str]:
        """The last deltas, once the text is complete."""
        return self._feed(delta, final=True)

    def _feed(self, delta: str, final: bool) -> tuple[str, str]:
        text, self.pending = self.pending + delta, ""
        if self.part == "start":
            body = text.lstrip()
            if not final and self.open_tag.startswith(body):
                self.pending = text  # nothing yet, or what may still become the opening tag
                return "", ""
            text = body[len(self.open_tag):] if body.startswith(self.open_tag) else body
            self.part = "thinking"
        thinking = ""
        if self.part == "thinking":
            before, tag, rest = text.partition(self.close_tag)
            if not tag:
                keep = 0 if final else held_back(before, (self.close_tag,))
                shown = self._show(before[:len(before) - keep], final)
                self.pending += before[len(before) - keep:]
                return shown, ""
            thinking = self._show(before, final=True)
            self.part, self.begun, text = "answer", False, rest
        return thinking, self._show(text, final)

    def _show(self, text: str, final: bool) -> str:
        """What of a part's next `text` can be shown: leading whitespace trimmed at the part's start, trailing
        whitespace held back until more text follows it (the final split trims it)."""
        if not self.begun:
            text = text.lstrip()
        body = text.rstrip()
        if not final:
            self.pending = text[len(body):]
        self.begun = self.begun or bool(body)
        return body


def request_budgets(req: ChatRequest, plan: ReasoningPlan | None, room: int) -> tuple[ThinkBudget | None, int]:
    """(think budget, answer max_tokens) of a request with `room` tokens of context left after its prompt.

    The think budget is the request's max_reasoning_tokens, else its
    reasoning_effort through EFFORT_BUDGETS, else the server's
    reasoning.think_budget; the answer gets max_tokens, else the server's
    reasoning.answer_budget. An explicit max_reasoning_tokens that does not fit
    the context is refused, as max_tokens is; an effort level or the server's
    default is cut to the room the answer leaves (usage shows the tokens used).
    So the forced tag always fits: a thinking is left open only by an end token
    or a stop string inside it.
    """
    if plan is None or not plan.enabled:
        asked = "max_reasoning_tokens" if req.max_reasoning_tokens is not None else "reasoning_effort"
        if req.max_reasoning_tokens is not None or req.reasoning_effort is not None:
            raise RequestError(f"'{asked}' needs reasoning mode, which this server runs without (start it with "
                               f"`rft-jax serve --reasoning.mode on`)", param=asked, code="unsupported_parameter")
        return None, req.max_tokens or room
    answer = req.max_tokens or min(plan.answer_budget, room)
    if answer <= len(plan.forced_ids):
        raise RequestError(f"in reasoning mode max_tokens limits the answer, which starts with the forced closing "
                           f"tag and cue ({len(plan.forced_ids)} tokens) when the thinking hits its budget: ask for "
                           f"more than {len(plan.forced_ids)}", param="max_tokens")
    if req.max_reasoning_tokens is not None:
        think = req.max_reasoning_tokens
        if think + answer > room:
            raise RequestError(f"this model's context leaves {room} tokens after the prompt; max_reasoning_tokens "
                               f"({think}) and the answer's max_tokens ({answer}) together ask for {think + answer}",
                               param="max_reasoning_tokens", code="context_length_exceeded")
    else:
        think = EFFORT_BUDGETS[req.reasoning_effort] if req.reasoning_effort is not None else plan.think_budget
        think = min(think, room - answer)
    return ThinkBudget(think, plan.forced_ids, plan.closings), answer
