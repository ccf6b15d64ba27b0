"""Token ids in, text out, one token at a time, with stop strings.

Decoding the whole sequence after every token is quadratic, and decoding each
token alone splits multi-byte characters, so this keeps a short window of
recent ids (the offsets scheme of text-generation-inference and vLLM). Text that
could still become a stop string is held back until it cannot, so a streamed
response never shows the start of a stop sequence it then cuts.
"""

from __future__ import annotations

from collections.abc import Sequence


def held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:k]):
                best = k
                break
    return best


class TextStream:
    """Incremental detokenizer: `push(token)` returns the text that is now safe to show."""

    def __init__(self, tokenizer, stops: Sequence[str] = (), skip_ids: Sequence[int] = ()):
        self.tokenizer, self.stops = tokenizer, tuple(s for s in stops if s)
        self.skip_ids = frozenset(skip_ids)
        self.ids: list[int] = []
        self.prefix_offset = self.read_offset = 0
        self.shown: list[str] = []  # the pieces handed out
        self.pending = ""  # decoded, not handed out yet (what could still begin a stop string)
        self.stopped = False  # a stop string was found; `text` ends just before it

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token: int) -> str:
        if self.stopped or token in self.skip_ids:
            return ""
        self.ids.append(token)
        before = self._decode(self.ids[self.prefix_offset:self.read_offset])
        after = self._decode(self.ids[self.prefix_offset:])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""  # an incomplete UTF-8 character: wait for the next token
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        # Only the text not handed out yet is searched and kept: a stop string cannot start in text already
        # shown (held_back kept back every end that could begin one), and appending to the whole text on every
        # token would copy it each time.
        self.pending += after[len(before):]
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.pending, self.stopped = self.pending[:min(hits)], True
            return self.flush()
        safe = len(self.pending) - held_back(self.pending, self.stops)
        out, self.pending = self.pending[:safe], self.pending[safe:]
        self.shown.append(out)
        return out

    def flush(self) -> str:
        """The text held back so far (call at the end of the sequence)."""
        out, self.pending = self.pending, ""
        self.shown.append(out)
        return out

    @property
    def text(self) -> str:
        """Everything decoded so far (up to a stop string); joined on each call."""
        return "".join(self.shown) + self.pending
