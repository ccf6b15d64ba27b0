"""The solution's side of one code test: load solution.py, then answer the judge's requests.

Runs in its own sandbox with the solution, so nothing here is trusted: the
solution may rewrite any of it. That is harmless by design (see
rft_jax/rewards/code_tests.py): the judge sends only what a test passes into the
solution (names, arguments) and never what it expects back.
Usage: solution_side.py REQUEST_FD REPLY_FD
"""

import sys
import traceback

import wire

PLAIN = (bool, int, float, complex, str, bytes, tuple, list, frozenset, set, dict)


def plain(obj):
    """The plain-data value of a subclass of a builtin type (a namedtuple, an IntEnum), or an
    iterator's items; the judge compares such objects to expected values by this value only."""
    for base in PLAIN:
        if isinstance(obj, base):
            return base(obj)
    if hasattr(obj, "__next__"):
        return list(obj)
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy scalars and arrays: their Python values
        return obj.tolist()
    if type(obj).__name__ in ("Decimal", "Fraction"):  # numbers the wire has no type for
        return float(obj)
    raise TypeError(f"{type(obj).__name__} object has no plain value to compare")


class Server:
    def __init__(self, namespace):
        self.namespace = namespace
        self.objects = {}

    def keep(self, obj):
        key = f"#{len(self.objects)}"
        self.objects[key] = obj
        return key

    def lookup(self, key):
        return self.objects[key] if key.startswith("#") else self.namespace[key]

    def handle(self, request):
        op = request["op"]
        if op == "names":
            return [n for n in self.namespace if isinstance(n, str) and not n.startswith("__")]
        target = self.lookup(request["target"])
        if op == "call":
            args = wire.decode(request["args"], self.lookup)
            kwargs = wire.decode(request["kwargs"], self.lookup)
            return target(*args, **kwargs)
        if op == "getattr":
            return getattr(target, request["name"])
        if op == "value":
            return plain(target)
        if op == "eq":
            return bool(target == self.lookup(request["other"]))
        raise ValueError(f"unknown request {op!r}")


def main():
    requests = open(int(sys.argv[1]), "rb")
    replies = open(int(sys.argv[2]), "wb")
    namespace = {"__name__": "solution"}
    failure = None
    try:
        with open("solution.py") as f:
            exec(compile(f.read(), "solution.py", "exec"), namespace)
    except BaseException as err:  # noqa: B036 (a SystemExit at import is the solution failing to load)
        traceback.print_exc()
        failure = f"solution failed to load: {type(err).__name__}: {err}"
    server = Server(namespace)
    while (request := wire.receive(requests)) is not None:
        try:
            if failure:
                raise ImportError(failure)
            reply = {"ok": wire.encode(server.handle(request), server.keep)}
        except BaseException as err:  # noqa: B036 (reported to the judge as the call's exception)
            reply = {"raise": type(err).__name__, "message": str(err)[:500]}
        wire.send(replies, {"id": request.get("id"), **reply})


if __name__ == "__main__":
    main()
