"""Values on the pipes between a test's judge and the solution's process: one JSON object per line.

Stdlib only; copied into both sandboxes. Plain values travel as data and decode to
exact builtin types only (None, bool, int, float, complex, str, bytes, list, tuple,
set, frozenset, dict), so a hostile reply can build nothing with behaviour of its
own in the judge. Any other object stays where it was made and travels as a
reference key ({"r": key}), which `remote` turns back into an object.
"""

import json

MAX_LINE = 1 << 20  # a reply longer than this is refused (the judge reads no more)
_SEQUENCES = {list: "l", tuple: "t", set: "s", frozenset: "fs"}
_BUILD = {"l": list, "t": tuple, "s": set, "fs": frozenset}


def encode(value, ref):
    """JSON-ready form of `value`; `ref(obj)` gives the key of an object that is not plain data."""
    kind = type(value)
    if value is None or kind in (bool, int, str):
        return value
    if kind is float:
        return {"f": repr(value)}  # repr keeps nan and inf, which JSON numbers cannot
    if kind is complex:
        return {"c": [repr(value.real), repr(value.imag)]}
    if kind is bytes:
        return {"b": value.hex()}
    if kind in _SEQUENCES:
        return {_SEQUENCES[kind]: [encode(v, ref) for v in value]}
    if kind is dict:
        return {"d": [[encode(k, ref), encode(v, ref)] for k, v in value.items()]}
    return {"r": ref(value)}


def decode(data, remote):
    """The value `encode` wrote; `remote(key)` gives the object a reference stands for."""
    kind = type(data)
    if data is None or kind in (bool, int, str, float):
        return data
    if kind is not dict or len(data) != 1:
        raise ValueError(f"malformed value on the wire: {str(data)[:80]}")
    (tag, body), = data.items()
    if tag == "f" and type(body) is str:
        return float(body)
    if tag == "c" and type(body) is list and len(body) == 2:
        return complex(float(body[0]), float(body[1]))
    if tag == "b" and type(body) is str:
        return bytes.fromhex(body)
    if tag in _BUILD and type(body) is list:
        return _BUILD[tag](decode(v, remote) for v in body)
    if tag == "d" and type(body) is list:
        return {decode(k, remote): decode(v, remote) for k, v in _pairs(body)}
    if tag == "r" and type(body) is str:
        return remote(body)
    raise ValueError(f"malformed value on the wire: tag {tag!r}")


def _pairs(body):
    for pair in body:
        if type(pair) is not list or len(pair) != 2:
            raise ValueError("malformed dict on the wire")
        yield pair


def send(stream, message):
    stream.write(json.dumps(message).encode() + b"\n")
    stream.flush()


def receive(stream):
    """The next message, or None at EOF (the other side has gone)."""
    line = stream.readline(MAX_LINE + 1)
    if not line:
        return None
    if len(line) > MAX_LINE:
        raise ValueError(f"message longer than {MAX_LINE} bytes")
    message = json.loads(line)
    if type(message) is not dict:
        raise ValueError("malformed message")
    return message
