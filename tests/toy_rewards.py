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
