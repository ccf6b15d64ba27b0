"""`code_tests`: run produced Python code against the example's unit tests in the sandbox.

Reward = share of tests passed, in [0, 1]. Tests come from metadata `tests` (or a
reference answer `{"tests": [...]}` / a list): each is a snippet of asserts that
uses the names the solution defines. A run the sandbox had to stop (timeout,
memory, output, CPU) scores 0.0 with the reason in `RewardResult.error`; a
program that merely crashes (syntax error, exception at import) scores the tests
it passed (none).

Threat model. The solution is hostile and controls everything in its own
interpreter: builtins, `sys.exit`, `os._exit`, its stdout and every descriptor
it holds. So no verdict is ever read from it. Each test runs as two sandboxes
joined by two pipes (sandbox/judge_side.py, sandbox/solution_side.py):
  judge     runs the test snippet. Names the solution defines are stand-ins
            whose calls go to the solution's process; replies decode to plain
            builtin values (sandbox/wire.py), so the assert's comparison runs in
            the judge, on values the solution returned without ever seeing the
            expected ones. Only the judge holds the verdict pipe, which we read.
  solution  loads solution.py and answers calls. It sees what the test passes
            in (arguments), never what the test expects back.
Each side has its own PID namespace, private /tmp and (as root) user id, so the
solution can neither see nor signal the judge, nor read its test file; there is no
secret in argv or the environment. This holds under bubblewrap; under a weaker
backend named by `sandbox_backend` on a non-root host both sides share a uid and
/tmp, and a solution could read the test it is judged by.
What the solution *can* do is what any function can: return values, raise, hang
(the judge's per-test timer fails the test), or die (the test fails). An object
it returns that is not plain data equals an expected value only through its
plain value (a namedtuple as its tuple, an iterator as its items), which it
must give without seeing the value it is compared to.
What tests can do: call the solution's functions and classes with plain data or
objects the solution made, read attributes, compare results. They cannot pass
the solution a callable (a lambda) or a local class instance, and they do not see
a solution name that would shadow a builtin (`all`, `AssertionError`).
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rft_jax.data.example import Example
from rft_jax.rewards.result import RewardResult
from rft_jax.rewards.sandbox import SandboxLimits, SandboxPool
from rft_jax.rewards.sandbox.isolation import choose_backend
from rft_jax.rewards.sandbox.process import SandboxResult, default_uid

_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.S | re.I)
_HERE = Path(__file__).with_name("sandbox")
WIRE = (_HERE / "wire.py").read_text()
JUDGE = (_HERE / "judge_side.py").read_text()
SERVER = (_HERE / "solution_side.py").read_text()
STOPPED = ("timeout", "cpu_limit", "memory_limit", "output_limit", "sandbox_error")
"""Solution-side statuses meaning the sandbox had to stop the program: the example scores 0.0."""
MAX_WORKERS = 23  # two uid slots per worker, below the 16 the python tool takes (environments/python.py)


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


def read_verdict(fd: int) -> dict:
    """What the judge wrote on its verdict pipe; an empty or garbled pipe is a failed test."""
    chunks = []
    with os.fdopen(fd, "rb") as pipe:
        while chunk := pipe.read(65536):
            chunks.append(chunk)
    try:
        verdict = json.loads(b"".join(chunks))
    except ValueError:
        return {"passed": False, "loaded": False, "note": "the judge gave no verdict"}
    return verdict if isinstance(verdict, dict) else {"passed": False, "loaded": False, "note": "bad verdict"}


def run_test(pool: SandboxPool, code: str, test: str, judge_limits: SandboxLimits,
             per_test_s: float) -> tuple[dict, SandboxResult]:
    """One test: the judge and the solution in two sandboxes, joined by a request and a reply pipe."""
    request_r, request_w = os.pipe()
    reply_r, reply_w = os.pipe()
    verdict_r, verdict_w = os.pipe()
    stop = threading.Event()
    try:
        served, judge = _run_pair(pool, code, test, judge_limits, per_test_s,
                                  (request_r, request_w, reply_r, reply_w, verdict_w), stop)
    except BaseException:
        os.close(verdict_r)
        raise
    verdict = read_verdict(verdict_r)
    if judge.status == "sandbox_error":
        verdict = {"passed": False, "loaded": False, "note": f"judge {judge.error}"}
    return verdict, served


def _run_pair(pool: SandboxPool, code: str, test: str, judge_limits: SandboxLimits, per_test_s: float,
              fds: tuple[int, ...], stop: threading.Event) -> tuple[SandboxResult, SandboxResult]:
    request_r, request_w, reply_r, reply_w, verdict_w = fds
    with ThreadPoolExecutor(1) as side:
        solution = side.submit(pool.run, {"solution.py": code, "solution_side.py": SERVER, "wire.py": WIRE},
                               "solution_side.py", (str(request_r), str(reply_w)),
                               pass_fds=(request_r, reply_w), stop=stop)
        try:
            load_s = str(pool.limits.wall_s + 1)  # past the solution's own wall limit, which then reports it
            judge = pool.run({"judge_side.py": JUDGE, "wire.py": WIRE, "_test.py": test}, "judge_side.py",
                             (str(request_w), str(reply_r), str(verdict_w), load_s, str(per_test_s)),
                             limits=judge_limits, pass_fds=(request_w, reply_r, verdict_w))
        finally:
            stop.set()  # the judge is done: the solution's process has nothing left to answer
        return solution.result(), judge


def checked(share: float, metrics: dict[str, float]) -> RewardResult:
    """The score, which must lie in [0, 1]: anything else (NaN included) is an error scoring 0."""
    if not (isinstance(share, float) and math.isfinite(share) and 0.0 <= share <= 1.0):
        return RewardResult(0.0, metrics=metrics, error=f"code_tests: score {share!r} outside [0, 1]")
    return RewardResult(share, metrics=metrics)


def score_example(pool: SandboxPool, example: Example, completion: str, judge_limits: SandboxLimits,
                  per_test_s: float) -> RewardResult:
    try:
        tests = tests_of(example)
    except ValueError as err:
        return RewardResult(0.0, error=str(err))
    code = extract_code(completion)
    passed, crashed = 0, False
    for test in tests:
        verdict, served = run_test(pool, code, test, judge_limits, per_test_s)
        if served.status in STOPPED:  # the sandbox had to stop it: a contained per-sample error
            metrics = {"tests_passed": 0.0, "tests_total": float(len(tests)), "pass_rate": 0.0, "crashed": 0.0}
            return RewardResult(0.0, metrics=metrics, error=f"sandbox {served.error}")
        passed += verdict.get("passed") is True
        crashed |= verdict.get("loaded") is not True
    share = passed / len(tests)
    return checked(share, {"tests_passed": float(passed), "tests_total": float(len(tests)), "pass_rate": share,
                           "crashed": float(crashed)})


def code_tests_batch(examples: list[Example], completions: list[str], *, max_workers: int = 2,
                     cpu_s: int = 5, wall_s: float = 10.0, memory_mb: int = 1024, per_test_s: float = 2.0,
                     sandbox_backend: str = "auto") -> list[RewardResult]:
    """`sandbox_backend`: "auto" (bubblewrap, or raise SandboxUnavailable before running anything),
    or a weaker backend opted into by name: "unshare" or "none" (see sandbox/isolation.py)."""
    if not 1 <= max_workers <= MAX_WORKERS:
        raise ValueError(f"max_workers must be in 1..{MAX_WORKERS}, got {max_workers}")
    limits = SandboxLimits(cpu_s=cpu_s, wall_s=wall_s, memory_mb=memory_mb)
    pool = SandboxPool(2 * max_workers, limits, sandbox_backend)
    choose_backend(sandbox_backend, default_uid() + 1 if os.geteuid() == 0 else None)  # fails closed, up front
    judge_limits = SandboxLimits(cpu_s=cpu_s + math.ceil(per_test_s), wall_s=wall_s + per_test_s + 5,
                                 memory_mb=max(memory_mb, 512))
    with ThreadPoolExecutor(max_workers) as executor:
        return list(executor.map(lambda pair: score_example(pool, *pair, judge_limits, per_test_s),
                                 zip(examples, completions)))


def check_sandbox(*, sandbox_backend: str = "auto", **_: object) -> None:
    """Raises SandboxUnavailable (naming the fix) when the requested sandbox cannot run on this machine."""
    choose_backend(sandbox_backend, default_uid() + 1 if os.geteuid() == 0 else None)


def code_tests(example: Example, completion: str, **params: object) -> RewardResult:
    return code_tests_batch([example], [completion], **params)[0]


def render_reference(example: Example) -> str:
    """A known-good solution when the example carries one (metadata `solution`)."""
    ref = example.reference_answer
    solution = example.metadata.get("solution") or (ref.get("solution") if isinstance(ref, dict) else None)
    return f"```python\n{solution}\n```" if solution else ""
