"""Multi-step arithmetic word problems: the default experiment's task.

Each problem is a running quantity changed by a chain of steps (buy, give away,
grow k-fold, split into bags), so the number of steps sets the difficulty and the
answer is always a non-negative integer that can be checked exactly.
"""

from __future__ import annotations

import numpy as np

from rft_jax.data.example import Example, stable_id
from rft_jax.data.tasks.prompt import PromptStyle

LEVELS = ("two_operand", "one_step", "two_step", "multi_step")
NAMES = ("Maria", "Tom", "Aisha", "Kenji", "Lena", "Omar", "Priya", "Diego", "Sofia", "Noah")
ITEMS = ("apples", "marbles", "stickers", "books", "coins", "pencils", "cards", "shells")
FRIENDS = ("a friend", "a neighbour", "a classmate", "a cousin")


def generate_arithmetic(n: int, *, seed: int, levels: tuple[str, ...] = LEVELS,
                        prompt: PromptStyle = PromptStyle()) -> list[Example]:
    """`n` distinct problems cycling through `levels`; same seed, same problems."""
    unknown = set(levels) - set(LEVELS)
    if unknown:
        raise ValueError(f"unknown arithmetic levels {sorted(unknown)}; choose from {LEVELS}")
    rng = np.random.default_rng(seed)
    examples: list[Example] = []
    seen: set[str] = set()
    for _attempt in range(50 * n + 100):
        if len(examples) == n:
            break
        level = levels[len(examples) % len(levels)]
        question, answer = make_problem(level, rng)
        if question in seen:
            continue
        seen.add(question)
        messages = prompt.messages(question)
        examples.append(Example(
            id=f"arith-{seed}-{len(examples):05d}-{stable_id(messages, answer)[3:11]}",
            messages=messages, reference_answer=answer,
            metadata={"data_source": "rft_jax/arithmetic", "level": level,
                      "difficulty": LEVELS.index(level) + 1, "question": question}))
    if len(examples) < n:
        raise ValueError(f"could only make {len(examples)} distinct problems for levels {levels}")
    return examples


def make_problem(level: str, rng: np.random.Generator) -> tuple[str, int]:
    if level == "two_operand":
        return two_operand(rng)
    steps = {"one_step": 1, "two_step": 2, "multi_step": int(rng.integers(3, 5))}[level]
    return word_problem(steps, rng)


def two_operand(rng: np.random.Generator) -> tuple[str, int]:
    op = rng.choice(["+", "-", "*"])
    if op == "*":
        a, b = int(rng.integers(2, 13)), int(rng.integers(2, 13))
        return f"What is {a} × {b}?", a * b
    a, b = int(rng.integers(10, 100)), int(rng.integers(10, 100))
    if op == "-":
        a, b = max(a, b), min(a, b)
        return f"What is {a} - {b}?", a - b
    return f"What is {a} + {b}?", a + b


def word_problem(steps: int, rng: np.random.Generator) -> tuple[str, int]:
    """A story with `steps` operations on a running total."""
    name, item = str(rng.choice(NAMES)), str(rng.choice(ITEMS))
    if rng.random() < 0.4:  # the opening itself is a multiplication step
        boxes, per_box = int(rng.integers(2, 10)), int(rng.integers(3, 13))
        sentences, total = [f"{name} has {boxes} boxes with {per_box} {item} in each box."], boxes * per_box
        steps -= 1
    else:
        total = int(rng.integers(5, 60))
        sentences = [f"{name} has {total} {item}."]
    for _ in range(steps):
        sentence, total = step(name, item, total, rng)
        sentences.append(sentence)
    sentences.append(f"How many {item} does {name} have now?")
    return " ".join(sentences), total


def step(name: str, item: str, total: int, rng: np.random.Generator) -> tuple[str, int]:
    divisors = [k for k in (2, 3, 4, 5) if total % k == 0 and total >= 2 * k]
    ops = ["buy", "give"] + (["grow"] if total <= 60 else []) + (["split"] if divisors else [])
    op = str(rng.choice(ops)) if total > 1 else "buy"
    if op == "buy":
        b = int(rng.integers(2, 40))
        return f"Then {name} buys {b} more {item}.", total + b
    if op == "give":
        b = int(rng.integers(1, total))
        return f"Then {name} gives {b} {item} to {rng.choice(FRIENDS)}.", total - b
    if op == "grow":
        k = int(rng.integers(2, 5))
        return f"Then {name} collects more until there are {k} times as many {item} as before.", total * k
    k = int(rng.choice(divisors))
    return f"Then {name} splits the {item} equally into {k} bags and keeps only one bag.", total // k
