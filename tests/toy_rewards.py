"""Rewards used by trainer tests (importable as `tests.toy_rewards:NAME`)."""


def brevity(example, completion: str) -> float:
    """Shorter is better: a dense signal even a random tiny model can move."""
    return 1.0 / (1.0 + len(completion))


def coin(example, completion: str) -> float:
    """1 when the completion has an even number of characters: about half the groups of 2 agree."""
    return float(len(completion) % 2 == 0)


def hangs_on_odd(example, completion: str) -> float:
    """Hangs (30 s) on completions of odd length, raises on lengths divisible by 3, else `brevity`."""
    import time  # noqa: PLC0415

    if len(completion) % 2:
        time.sleep(30)
    if len(completion) % 3 == 0:
        raise ValueError("this reward raises on lengths divisible by 3")
    return brevity(example, completion)


def misbehaves(example, completion: str) -> float:
    """Misbehaves as its completion says: "hang" sleeps for an hour, "exit" ends its process (os._exit),
    "segv" crashes it (reads address 0 through ctypes), "nan" returns NaN, "big" returns 2.0, outside its
    declared range; anything else scores its length / 100."""
    import ctypes  # noqa: PLC0415
    import os  # noqa: PLC0415
    import time  # noqa: PLC0415

    if "hang" in completion:
        time.sleep(3600)
    if "exit" in completion:
        os._exit(3)
    if "segv" in completion:
        ctypes.string_at(0)
    if "nan" in completion:
        return float("nan")
    return 2.0 if "big" in completion else len(completion) / 100


misbehaves.score_range = (0.0, 1.0)


def hangs_forever_sometimes(example, completion: str) -> float:
    """Hangs for an hour on completions whose length is 1 more than a multiple of 4, else `brevity`."""
    import time  # noqa: PLC0415

    if len(completion) % 4 == 1:
        time.sleep(3600)
    return brevity(example, completion)
