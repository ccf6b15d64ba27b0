"""Environments: the tool-table base contains every failure of a tool (unknown name, bad arguments, an
exception, a timeout) as an error message the model reads, and the environment keeps working after it;
the config builds a fresh environment per episode; a user's module is bound to the dataset's tools."""

import threading
import time

import pytest

from rft_jax.data.example import Example
from rft_jax.data.tool_calls import ParsedTurn, ToolCall, parse_tool_calls
from rft_jax.environments import (
    Environment,
    EnvironmentConfig,
    StepResult,
    ToolEnvironment,
    ToolError,
    make_environment,
)
from rft_jax.environments.base import truncate
from rft_jax.environments.calculator import CalculatorEnvironment
from rft_jax.environments.module_tools import ModuleEnvironment

EXAMPLE = Example(id="ex", messages=[{"role": "user", "content": "hi"}])


def turn(*calls, errors=()):
    return ParsedTurn("", tuple(ToolCall(name, args, f"call_{k}") for k, (name, args) in enumerate(calls)),
                      tuple(errors))


@pytest.fixture
def release():
    """An event a hung tool waits on; set at the end so the abandoned thread finishes."""
    event = threading.Event()
    yield event
    event.set()


def toy_env(release, timeout_s=0.3):
    def add(a: int, b: int) -> int:
        return a + b

    def boom() -> str:
        raise RuntimeError("the tool broke")

    def hang() -> str:
        release.wait(30)
        return "late"

    def refuse() -> str:
        raise ToolError("not today")

    def leave() -> str:
        raise SystemExit(3)

    def lookup() -> dict:
        return {"city": "Paris", "temp": 21}

    functions = {f.__name__: f for f in (add, boom, hang, refuse, leave, lookup)}
    functions["shout"] = lambda text: text.upper() * 1000
    return ToolEnvironment(functions, [], timeout_s=timeout_s)


def test_calls_are_answered_in_order_with_their_ids(release):
    env = toy_env(release)
    result = env.step(turn(("add", {"a": 2, "b": 3}), ("lookup", {})))
    assert isinstance(result, StepResult) and result.errors == 0 and not result.done and result.reward == 0
    assert result.messages == [
        {"role": "tool", "tool_call_id": "call_0", "name": "add", "content": "5"},
        {"role": "tool", "tool_call_id": "call_1", "name": "lookup", "content": '{"city": "Paris", "temp": 21}'}]
    assert isinstance(env, Environment)


@pytest.mark.parametrize("call, expect", [
    (("nope", {}), "unknown tool 'nope'; the tools are: add, boom"),
    (("add", {"a": 1}), "bad arguments for 'add': missing a required argument: 'b'"),
    (("add", {"a": 1, "b": 2, "c": 3}), "bad arguments for 'add'"),
    (("add", {"a": 1, "b": "x"}), "'add' raised TypeError"),
    (("boom", {}), "'boom' raised RuntimeError: the tool broke"),
    (("refuse", {}), "Error: not today"),
    (("leave", {}), "'leave' raised SystemExit: 3"),
])
def test_a_failing_call_is_an_error_message_and_the_environment_keeps_working(release, call, expect):
    env = toy_env(release)
    result = env.step(turn(call, ("add", {"a": 1, "b": 1})))
    assert result.errors == 1
    first, second = result.messages
    assert first["content"].startswith("Error:") and expect in first["content"], first
    assert first["tool_call_id"] == "call_0" and first["name"] == call[0]
    assert second["content"] == "2"


def test_a_call_past_the_timeout_is_abandoned_with_an_error(release):
    env = toy_env(release, timeout_s=0.2)
    start = time.monotonic()
    result = env.step(turn(("add", {"a": 4, "b": 5}), ("hang", {}), ("add", {"a": 1, "b": 1})))
    assert time.monotonic() - start < 2
    assert result.errors == 2 and 0.2 <= result.seconds < 2
    assert result.messages[0]["content"] == "9"
    assert result.messages[1]["content"] == "Error: 'hang' timed out after 0.2 s"
    # the step's own limit has run out: the call after the hang is answered, not run
    assert result.messages[2]["content"] == "Error: not run: the step's time limit of 0.2 s ran out"
    assert env.step(turn(("add", {"a": 1, "b": 2}))).messages[0]["content"] == "3"  # still working


def test_a_step_of_many_hanging_calls_ends_within_twice_its_timeout(release):
    env = toy_env(release, timeout_s=0.2)
    start = time.monotonic()
    result = env.step(turn(*[("hang", {})] * 6))
    assert time.monotonic() - start < 0.6  # 6 x 0.2 s before the step limit
    assert result.errors == 6 and len(result.messages) == 6


def test_malformed_calls_from_the_parser_become_error_messages(release):
    env = toy_env(release)
    parsed = parse_tool_calls('<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>'
                              '<tool_call>{not json}</tool_call>')
    assert len(parsed.calls) == 1 and len(parsed.errors) == 1
    result = env.step(parsed)
    assert result.errors == 1 and [m["content"] for m in result.messages][0] == "3"
    error = result.messages[1]
    assert error["role"] == "tool" and error["content"].startswith("Error: Tool call 2 is not valid JSON")
    only_errors = env.step(turn(errors=("bad one", "bad two")))
    assert only_errors.errors == 2 and [m["content"] for m in only_errors.messages] == [
        "Error: bad one", "Error: bad two"]


def test_long_output_is_truncated_with_a_note(release):
    content = toy_env(release).step(turn(("shout", {"text": "abc"}))).messages[0]["content"]
    assert content == "ABC" * 666 + "AB\n... [output truncated: 1000 more characters]"
    assert truncate("short") == "short" and truncate("x" * 2000) == "x" * 2000


def test_make_environment_builds_a_fresh_one_per_episode():
    cfg = EnvironmentConfig(name="calculator", timeout_s=2.0)
    first, second = make_environment(cfg, EXAMPLE), make_environment(cfg, EXAMPLE)
    assert isinstance(first, CalculatorEnvironment) and first is not second and first.timeout_s == 2.0
    assert first.reset(EXAMPLE) == [] and first.tools[0]["function"]["name"] == "calculator"
    with pytest.raises(ValueError, match='"none" means single-turn'):
        make_environment(EnvironmentConfig(), EXAMPLE)
    with pytest.raises(ValueError, match="needs EnvironmentConfig.url"):
        make_environment(EnvironmentConfig(name="remote"), EXAMPLE)


TOOLS_PY = '''
import time

def get_weather(city: str) -> str:
    return f"Sunny in {city}"

def slow() -> str:
    time.sleep(5)
    return "done"
'''


def weather_example(*names):
    tools = [{"type": "function", "function": {"name": n, "parameters": {"type": "object", "properties": {}}}}
             for n in names]
    return Example(id="w", messages=EXAMPLE.messages, tools=tools)


def test_module_tools_are_bound_by_name(tmp_path):
    path = tmp_path / "my_tools.py"
    path.write_text(TOOLS_PY)
    cfg = EnvironmentConfig(name="module", module=str(path), timeout_s=0.3)
    example = weather_example("get_weather", "slow")
    env = make_environment(cfg, example)
    assert isinstance(env, ModuleEnvironment) and env.tools == example.tools
    result = env.step(turn(("get_weather", {"city": "Oslo"}), ("slow", {})))
    assert result.messages[0]["content"] == "Sunny in Oslo"
    assert result.errors == 1 and "timed out" in result.messages[1]["content"]


def test_module_binding_names_the_missing_function_and_the_module(tmp_path):
    path = tmp_path / "my_tools.py"
    path.write_text(TOOLS_PY)
    with pytest.raises(ValueError, match=r"tool 'book_flight' has no function in module '.*my_tools.py'.*"
                                         r"get_weather, slow"):
        make_environment(EnvironmentConfig(name="module", module=str(path)), weather_example("get_weather",
                                                                                             "book_flight"))
    with pytest.raises(ValueError, match="this example has none"):
        make_environment(EnvironmentConfig(name="module", module=str(path)), EXAMPLE)
    with pytest.raises(ValueError, match="cannot import 'no_such_module_xyz'"):
        make_environment(EnvironmentConfig(name="module", module="no_such_module_xyz"), weather_example("f"))
    env = make_environment(EnvironmentConfig(name="module", module="json"), weather_example("dumps"))
    assert env.step(turn(("dumps", {"obj": [1, 2]}))).messages[0]["content"] == "[1, 2]"
