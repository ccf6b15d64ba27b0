"""`code_tests`: run produced Python code against the example's unit tests in the sandbox.

Reward = share of tests passed. Tests come from metadata `tests` (or a reference
answer `{"tests": [...]}` / a list): each is a snippet of asserts run in the
solution's namespace. A run the sandbox had to stop (timeout, memory, output,
CPU) scores 0.0 with the reason in `RewardResult.error`; a program that merely
crashes (syntax error, exception at import) scores the tests it passed.
Known limit: tests run in the same process as the solution, so a program that
introspects its process could forge results; use remote grading if that matters.
"""

from __future__ import annotations

import json
import re
import secrets

from rft_jax.data.example import Example
from rft_jax.rewards.result import RewardResult
from rft_jax.rewards.sandbox import SandboxLimits, SandboxPool

_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.S | re.I)

HARNESS = r'''
import json, signal, sys
nonce, per_test = sys.argv[1], float(sys.argv[2])
tests = json.load(open("_tests.json"))

def report(i, ok, note=""):
    print(f"@@{nonce} {i} {'PASS' if ok else 'FAIL'} {note[:200]}", flush=True)

def alarm(signum, frame):
    raise TimeoutError(f"test took longer than {per_test} s")

signal.signal(signal.SIGALRM, alarm)
namespace = {"__name__": "solution"}
try:
    exec(compile(open("solution.py").read(), "solution.py", "exec"), namespace)
except BaseException as err:
    print(f"solution failed to load: {type(err).__name__}: {err}", flush=True)
    sys.exit(1)
for i, test in enumerate(tests):
    signal.setitimer(signal.ITIMER_REAL, per_test)
    try:
        exec(compile(test, f"test_{i}", "exec"), dict(namespace))
        signal.setitimer(signal.ITIMER_REAL, 0)
        report(i, True)
    except BaseException as err:
        signal.setitimer(signal.ITIMER_REAL, 0)
        report(i, False, f"{type(err).__name__}: {err}")
'''


def extract_code(text: str) -> str:
    blocks = _FENCE.findall(text)
    return blocks[-1] if blocks else text


def tests_of(example: Example) -> list[str]:
    ref = example.reference_answer
    tests = example.metadata.get("tests") or (ref.get("tests") if isinstance(ref, dict) else ref)
    if isinstance(tests, str):
        tests = [tests]
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
        raise ValueError("example needs metadata `tests`: a non-empty list of Python test snippets")
    return tests


def job(example: Example, completion: str) -> dict[str, str]:
    return {"solution.py": extract_code(completion), "_tests.json": json.dumps(tests_of(example)),
            "_harness.py": HARNESS}


def result_of(output: str, status: str, error: str | None, total: int, nonce: str) -> RewardResult:
    passed = {int(m) for m in re.findall(rf"^@@{nonce} (\d+) PASS", output, re.M)}
    share = len(passed) / total
    metrics = {"tests_passed": float(len(passed)), "tests_total": float(total), "pass_rate": share,
               "crashed": float(status == "error")}
    if status not in ("ok", "error"):  # the sandbox had to stop it: a contained per-sample error
        return RewardResult(0.0, metrics=metrics, error=f"sandbox {error}")
    return RewardResult(share, metrics=metrics)  # a program that crashes just passes fewer tests


def code_tests_batch(examples: list[Example], completions: list[str], *, max_workers: int = 2,
                     cpu_s: int = 5, wall_s: float = 10.0, memory_mb: int = 1024, per_test_s: float = 2.0,
                     backend: str = "auto") -> list[RewardResult]:
    pool = SandboxPool(max_workers, SandboxLimits(cpu_s=cpu_s, wall_s=wall_s, memory_mb=memory_mb), backend)
    nonce = secrets.token_hex(8)
    results: list[RewardResult | None] = [None] * len(examples)
    jobs, where = [], []
    for i, (example, completion) in enumerate(zip(examples, completions)):
        try:
            jobs.append((job(example, completion), "_harness.py", (nonce, str(per_test_s))))
            where.append(i)
        except ValueError as err:
            results[i] = RewardResult(0.0, error=str(err))
    for i, run in zip(where, pool.map(jobs)):
        results[i] = result_of(run.output, run.status, run.error, len(tests_of(examples[i])), nonce)
    return results


def code_tests(example: Example, completion: str, **params: object) -> RewardResult:
    return code_tests_batch([example], [completion], **params)[0]


def render_reference(example: Example) -> str:
    """A known-good solution when the example carries one (metadata `solution`)."""
    ref = example.reference_answer
    solution = example.metadata.get("solution") or (ref.get("solution") if isinstance(ref, dict) else None)
    return f"```python\n{solution}\n```" if solution else ""
