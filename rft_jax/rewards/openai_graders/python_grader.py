"""OpenAI `python`: the grader's `grade(sample, item) -> float`, run in rft_jax's sandbox, one process per sample.

`sample` and `item` are the dicts of templating.py (output_text, output_json, ...; the dataset row).
As OpenAI documents, anything but a finite number (an exception, a string, NaN) grades 0; here the
sample also carries the reason as its error, so it is counted as a reward error.
Limits follow OpenAI's (2 minutes, 2 GB); there is no network. `image_tag` is accepted and ignored:
the code runs on this interpreter, so it can import what this environment has installed (numpy,
sympy, jsonschema, ...), which may differ from OpenAI's image.
"""

from __future__ import annotations

import json
import re
import secrets

from rft_jax.rewards.openai_graders.check import label
from rft_jax.rewards.result import RewardResult, failed
from rft_jax.rewards.sandbox import SandboxLimits, SandboxPool

LIMITS = SandboxLimits(cpu_s=120, wall_s=120.0, memory_mb=2048)
MAX_WORKERS = 4

HARNESS = r'''
import json, math, numbers, sys
nonce = sys.argv[1]
MISSING_MODULE = (" (the grader runs on this environment's Python, not OpenAI's image: install the module "
                  "here, or use the standard library)")

def report(payload):
    print(f"@@{nonce} " + json.dumps(payload), flush=True)

with open("_io.json") as f:
    data = json.load(f)
namespace = {"__name__": "grader"}
stage = "loading the grader's source"
try:
    with open("grader.py") as f:
        exec(compile(f.read(), "grader.py", "exec"), namespace)
    stage = "grade"
    value = namespace["grade"](data["sample"], data["item"])
except BaseException as err:
    hint = MISSING_MODULE if isinstance(err, ImportError) else ""
    report({"error": f"{stage} raised {type(err).__name__}: {err}"[:300] + hint})
    sys.exit(0)
if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
    report({"error": f"grade returned {repr(value)[:100]}, not a finite float"})
else:
    report({"score": float(value)})
'''


def job(grader: dict, item: dict, sample: dict, nonce: str) -> tuple:
    files = {"grader.py": grader["source"], "_harness.py": HARNESS,
             "_io.json": json.dumps({"sample": sample, "item": item}, default=str)}
    return files, "_harness.py", (nonce,)


def result_of(grader: dict, output: str, error: str | None, nonce: str) -> RewardResult:
    lines = re.findall(rf"^@@{nonce} (.*)$", output, re.M)
    if not lines:
        return failed(f"{label(grader)}: sandbox {error or 'run gave no grade'}")
    payload = json.loads(lines[-1])
    if "error" in payload:
        return failed(f"{label(grader)}: {payload['error']}")
    return RewardResult(payload["score"])


def grade_batch(grader: dict, items: list[dict], samples: list[dict]) -> list[RewardResult]:
    nonce = secrets.token_hex(8)
    pool = SandboxPool(max(1, min(MAX_WORKERS, len(items))), LIMITS)
    runs = pool.map([job(grader, item, sample, nonce) for item, sample in zip(items, samples)])
    return [result_of(grader, run.output, run.error, nonce) for run in runs]
