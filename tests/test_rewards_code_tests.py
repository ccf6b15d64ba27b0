"""code_tests: share of unit tests passed, with hostile or broken programs contained per sample."""

import os

from rft_jax.data import Example, load_dataset
from rft_jax.rewards import build_reward

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "experiments", "data", "code_tests_sample.jsonl")
EX = Example(id="add", messages=[{"role": "user", "content": "write add"}], reference_answer=None,
             metadata={"tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(0.5, 0.5) == 1.0",
                                 "assert add('a', 'b') == 'ab'"]})


def test_score_is_share_of_tests_passed_and_hostile_runs_are_contained():
    scorer = build_reward({"name": "code_tests", "cpu_s": 2, "wall_s": 10, "per_test_s": 1.0, "max_workers": 2})
    completions = [
        "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```",
        "```python\ndef add(a, b):\n    return int(a) + int(b)\n```",       # fails the float and str tests
        "def add(a, b):\n    while a == 1:\n        pass\n    return a + b",   # hangs on one test only
        "```python\ndef add(a, b) return a\n```",                             # syntax error
        "while True:\n    pass",                                             # hangs at import
        "import os\nos.environ.get('HOME')\nprint('x' * 10**8)",             # floods the output
        "The answer is to add them.",                                        # no code at all
    ]
    results = scorer.score_batch([EX] * len(completions), completions)
    assert [r.score for r in results] == [1.0, 0.5, 0.75, 0.0, 0.0, 0.0, 0.0]
    assert results[0].error is None and results[0].metrics["tests_passed"] == 4
    assert results[3].error is None and results[3].metrics["crashed"] == 1.0
    assert results[4].error.startswith("sandbox cpu_limit") or results[4].error.startswith("sandbox timeout")
    assert results[5].error.startswith("sandbox output_limit")


def test_missing_tests_is_a_per_sample_error():
    result = build_reward("code_tests").score(Example(id="n", messages=[]), "def f(): pass")
    assert result.score == 0.0 and "needs metadata `tests`" in result.error


def test_committed_sample_solutions_pass():
    examples = load_dataset(SAMPLE)
    scorer = build_reward("code_tests")
    results = scorer.score_batch(examples, [scorer.render_reference(e) for e in examples])
    assert [r.score for r in results] == [1.0] * len(examples)


def test_tests_judged_outside_the_solution_can_use_classes_generators_and_exceptions():
    """Each test runs in a judge process calling into the solution's (rft_jax/rewards/code_tests.py)."""
    solution = """```python
import collections
Point = collections.namedtuple("Point", "x y")
class Stack:
    def __init__(self):
        self.items = []
    def push(self, x):
        self.items.append(x)
    def pop(self):
        if not self.items:
            raise IndexError("empty")
        return self.items.pop()
def evens(n):
    return (i for i in range(n) if i % 2 == 0)
def mid(a, b):
    return Point((a.x + b.x) / 2, (a.y + b.y) / 2)
```"""
    tests = ["s = Stack()\ns.push(1)\ns.push([2, 'b'])\nassert s.pop() == [2, 'b'] and s.items == [1]",
             "try:\n    Stack().pop()\nexcept IndexError as err:\n    assert 'empty' in str(err)\nelse:\n    assert False",
             "assert list(evens(7)) == [0, 2, 4, 6] and sum(evens(5)) == 6",
             "from solution import mid, Point\nassert mid(Point(0, 0), Point(2, 4)) == (1.0, 2.0)",
             "assert Stack().pop() == 1"]  # fails: the IndexError reaches the judge
    example = Example(id="s", messages=[], metadata={"tests": tests})
    result = build_reward("code_tests").score(example, solution)
    assert result.score == 0.8 and result.metrics["tests_passed"] == 4, result
