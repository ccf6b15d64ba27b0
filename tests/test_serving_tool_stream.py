"""`ToolStream`, the server's streaming hold-back of tool calls, on its own: content streams until text could
start a call, and the streamed pieces join to the non-streamed answer however the text is cut."""

from __future__ import annotations

import random

from rft_jax.serving.tools import ToolStream, read_calls

CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 5}}\n</tool_call>'


def test_tool_stream_joins_to_the_completion_for_any_chunking():
    texts = [f"Let me add them.\n{CALL}", CALL, f"{CALL} and done.", f"Hm <tool {CALL}", "no call <tool_ca",
             "2 < 5 <", '<tool_call>{"name": 1}</tool_call>', "a\n\n", "", f"x{CALL}{CALL}y"]
    rng = random.Random(0)
    for text in texts:
        want = read_calls(text, "hermes")
        for _ in range(30):
            cuts = sorted(rng.sample(range(len(text) + 1), min(4, len(text) + 1)))
            pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
            stream = ToolStream("hermes")
            shown = [stream.push(p) for p in pieces]
            last, calls = stream.finish()
            assert "".join(shown) + last == (want.content or "")
            assert [c["function"] for c in calls] == [c["function"] for c in want.calls]
            if want.calls:  # what streamed before the end is text from before the first call
                assert text[:text.find("<tool_call>")].startswith("".join(shown))


def test_the_last_delta_given_to_finish_and_text_after_a_call_are_not_lost():
    # Before the fix, finish() dropped its own delta, and text after a call when the stream began with spaces.
    assert ToolStream("hermes").finish("Plain answer") == ("Plain answer", [])
    stream = ToolStream("hermes")
    assert stream.push("All ") == "All"
    assert stream.finish("done.") == (" done.", [])
    for text in (f" Let me check.{CALL} Done.", f"\n{CALL} Done."):
        want = read_calls(text, "hermes")
        stream = ToolStream("hermes")
        shown = stream.push(text[:5])
        last, calls = stream.finish(text[5:])
        assert (shown + last).strip() == want.content and calls and want.content.endswith("Done.")


def test_llama3_stream_holds_only_a_message_that_starts_as_a_call():
    call = '{"name": "add", "parameters": {"a": 2, "b": 5}}'
    stream = ToolStream("llama3")
    assert [stream.push(p) for p in (" ", call[:5], call[5:])] == ["", "", ""]
    last, calls = stream.finish()
    assert last == "" and calls[0]["function"]["name"] == "add"
    stream = ToolStream("llama3")
    assert [stream.push(p) for p in ("The ", "set {1} ", "is")] == ["The", " set {1}", " is"]
    assert stream.finish() == ("", [])
