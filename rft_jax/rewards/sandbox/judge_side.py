"""The judge of one code test: runs the test snippet here, calling into the solution's process.

Runs in a sandbox of its own that no solution code enters. The test's names
that the solution defines are stand-ins (`Remote`) whose calls and attribute
reads go over the request pipe; what comes back decodes to plain builtin values
(wire.py), so every comparison an assert makes runs here, on values the
solution committed to without seeing the expected ones. The verdict goes to a
pipe only this process holds.
Usage: judge_side.py REQUEST_FD REPLY_FD VERDICT_FD LOAD_S PER_TEST_S
"""

import builtins
import json
import keyword
import operator
import os
import signal
import sys
import types

import wire


class SolutionError(Exception):
    """An exception the solution raised that is not a builtin one (or could not be rebuilt here)."""


class Channel:
    def __init__(self, request_fd, reply_fd):
        self.requests = open(request_fd, "wb")
        self.replies = open(reply_fd, "rb")
        self.next_id = 0

    def ask(self, op, **fields):
        self.next_id += 1
        wire.send(self.requests, {"id": self.next_id, "op": op, **fields})
        while True:  # replies to earlier, abandoned requests are skipped
            reply = wire.receive(self.replies)
            if reply is None:
                raise SolutionError("the solution's process ended")
            if reply.get("id") == self.next_id:
                break
        if "raise" in reply:
            raise rebuilt(str(reply["raise"]), str(reply.get("message", "")))
        return wire.decode(reply.get("ok"), Remote)


# The iteration protocol's signals: raised into the judge they would end the test's own loops early, so
# `all(map(pred, xs))` over a `pred` that raises StopIteration would pass.
NOT_REBUILT = (StopIteration, StopAsyncIteration)


def rebuilt(name, message):
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception) and not issubclass(cls, NOT_REBUILT):
        try:
            return cls(message)
        except Exception:  # noqa: BLE001 (an exception type needing other arguments)
            pass
    return SolutionError(f"{name}: {message}")


CHANNEL = None


def encode_arg(value):
    def ref(obj):
        if isinstance(obj, Remote):
            return object.__getattribute__(obj, "_key")
        raise TypeError(f"a test can pass the solution plain data or its own objects, not {type(obj).__name__}")
    return wire.encode(value, ref)


class Remote:
    """An object living in the solution's process. Compared with anything local only through its plain
    value (`value` request), so a solution object cannot claim equality with an expected value it sees."""

    __slots__ = ("_key",)

    def __init__(self, key):
        object.__setattr__(self, "_key", key)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return CHANNEL.ask("getattr", target=self._key, name=name)

    def __call__(self, *args, **kwargs):
        return CHANNEL.ask("call", target=self._key, args=encode_arg(list(args)), kwargs=encode_arg(kwargs))

    def _plain(self):
        return CHANNEL.ask("value", target=self._key)

    def __eq__(self, other):
        # Two solution objects too are compared by their plain values here: the solution's own __eq__ could
        # say anything. Objects with no plain value cannot be compared, and the test fails.
        try:
            return self._plain() == (other._plain() if isinstance(other, Remote) else other)
        except TypeError:
            raise SolutionError(f"a solution object with no plain value was compared ({self!r})") from None

    def __ne__(self, other):
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self):
        return hash(self._key)

    def __bool__(self):
        try:
            return bool(self._plain())
        except TypeError:  # its truth would be the solution's to say: `assert f(x)` must not pass on that
            raise SolutionError(f"a solution object with no plain value was tested for truth ({self!r})") from None

    def __repr__(self):
        return f"<solution object {self._key}>"


def _via_plain(op, reflected=False):
    if reflected:
        return lambda self, other: op(other, self._plain())
    return lambda self, *args: op(self._plain(), *args)


for _name in ("len", "iter", "getitem", "contains", "lt", "le", "gt", "ge", "add", "sub", "mul",
              "truediv", "floordiv", "mod", "pow", "neg", "abs", "int", "float", "index", "reversed"):
    _op = {"int": int, "float": float, "iter": iter, "len": len, "abs": abs, "reversed": reversed}.get(
        _name) or getattr(operator, _name)
    setattr(Remote, f"__{_name}__", _via_plain(_op))
for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow"):
    setattr(Remote, f"__r{_name}__", _via_plain(getattr(operator, _name), reflected=True))


def test_globals(names):
    """The namespace a test runs in: its own builtins, and a stand-in for each name the solution
    defines (never one that would shadow a builtin such as AssertionError or all)."""
    if type(names) is not list:
        raise SolutionError("the solution's process did not list its names")
    usable = [n for n in names if type(n) is str and n.isidentifier() and not keyword.iskeyword(n)
              and not hasattr(builtins, n)]
    module = types.ModuleType("solution")
    for name in usable:
        setattr(module, name, Remote(name))
    sys.modules["solution"] = module  # for tests written as `from solution import f`
    return {"__name__": "__test__", "__builtins__": builtins, **{n: Remote(n) for n in usable}}


def alarm(signum, frame):
    raise TimeoutError("time limit reached")


def main():
    global CHANNEL
    request_fd, reply_fd, verdict_fd = (int(a) for a in sys.argv[1:4])
    load_s, per_test_s = float(sys.argv[4]), float(sys.argv[5])
    with open("_test.py") as f:
        test = f.read()
    CHANNEL = Channel(request_fd, reply_fd)
    verdict = {"loaded": False, "passed": False, "note": ""}
    signal.signal(signal.SIGALRM, alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, load_s)
        namespace = test_globals(CHANNEL.ask("names"))
        verdict["loaded"] = True
        signal.setitimer(signal.ITIMER_REAL, per_test_s)
        exec(compile(test, "test", "exec"), namespace)
        signal.setitimer(signal.ITIMER_REAL, 0)
        verdict["passed"] = True
    except BaseException as err:  # noqa: B036 (any failure of the test, a SystemExit included, is a FAIL)
        signal.setitimer(signal.ITIMER_REAL, 0)
        verdict["note"] = f"{type(err).__name__}: {err}"[:300]
    os.write(verdict_fd, json.dumps(verdict).encode())


if __name__ == "__main__":
    main()
