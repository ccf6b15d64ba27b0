"""Rewards used by trainer tests (importable as `tests.toy_rewards:NAME`)."""


def brevity(example, completion: str) -> float:
    """Shorter is better: a dense signal even a random tiny model can move."""
    return 1.0 / (1.0 + len(completion))


def coin(example, completion: str) -> float:
    """1 when the completion has an even number of characters: about half the groups of 2 agree."""
    return float(len(completion) % 2 == 0)
