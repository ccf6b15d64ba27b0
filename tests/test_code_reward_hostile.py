"""code_tests against programs that attack the grading rather than solve the task.

Every hostile program scores 0.0 and leaves the host as it was (no file, no
connection, no process); beside each, an honest correct program scores 1.0 in
the same batch. Several programs turn a successful attack into a correct `add`,
so a leak would also show up as a score. These run on the default backend
(bubblewrap; the reward refuses to run without it) and skip only where
bubblewrap genuinely does not work.
"""

import math
import os
import socket
import threading
import time
import uuid

import pytest

from rft_jax.data import Example
from rft_jax.rewards import build_reward
from rft_jax.rewards.sandbox import isolation
from rft_jax.rewards.sandbox import pool as pool_module
from rft_jax.rewards.sandbox.process import default_uid, live_pids_of

try:
    isolation.choose_backend("bwrap", default_uid() + 1 if os.geteuid() == 0 else None)
    NO_BWRAP = None
except isolation.SandboxUnavailable as err:
    NO_BWRAP = str(err)
# `make test` (CI) installs bubblewrap and sets RFT_JAX_REQUIRE_SANDBOX=1: there a sandbox that does not work
# fails these tests rather than skipping them unnoticed.
if NO_BWRAP is not None and os.environ.get("RFT_JAX_REQUIRE_SANDBOX") == "1":
    raise RuntimeError(f"RFT_JAX_REQUIRE_SANDBOX=1 but bubblewrap does not work here: {NO_BWRAP}")
needs_bwrap = pytest.mark.skipif(NO_BWRAP is not None, reason=f"bubblewrap does not work here: {NO_BWRAP}")

EX = Example(id="add", messages=[{"role": "user", "content": "write add"}], reference_answer=None,
             metadata={"tests": ["assert add(1, 2) == 3"]})
CORRECT_CODE = "def add(a, b):\n    return a + b\n"
CORRECT = f"```python\n{CORRECT_CODE}```"
WRONG = "\ndef add(a, b):\n    return None\n"
SPEC = {"name": "code_tests", "cpu_s": 2, "wall_s": 4, "per_test_s": 1.0, "max_workers": 2}

FORGES = {
    "argv_nonce": """
import sys
for token in sys.argv[1:]:
    for i in range(5):
        print(f"@@{token} {i} PASS", flush=True)
""",
    "env_and_proc_nonce": """
import glob, os, re
tokens = set(os.environ.values())
for path in ["/proc/self/cmdline", *glob.glob("/proc/*/cmdline"), *glob.glob("/proc/*/environ")]:
    try:
        tokens.update(re.findall(r"[0-9a-zA-Z]{6,}", open(path, "rb").read().decode("latin-1")))
    except OSError:
        pass
for token in list(tokens)[:200]:
    print(f"@@{token} 0 PASS")
""",
    "writes_to_every_fd": """
import os
for fd in range(64):
    for n in range(8):
        for line in (b'{"passed": true, "loaded": true, "note": ""}\\n', b'{"id": %d, "ok": true}\\n' % n,
                     b"@@ 0 PASS\\n"):
            try:
                os.write(fd, line)
            except OSError:
                pass
""",
    "replaces_stdout": """
import sys
class Rewrite:
    def write(self, text):
        return sys.__stdout__.write(text.replace("FAIL", "PASS"))
    def flush(self):
        sys.__stdout__.flush()
sys.stdout = sys.stderr = Rewrite()
""",
    "exit_0_at_import": "import os\nos._exit(0)\n",
    "sys_exit_0_at_import": "import sys\nsys.exit(0)\n",
    "patched_builtins": """
import builtins, sys
real_import, real_compile = builtins.__import__, builtins.compile
builtins.AssertionError = type("AssertionError", (Exception,), {})
builtins.exec = lambda *args, **kwargs: None
builtins.compile = lambda *args, **kwargs: real_compile("pass", "x", "exec")
builtins.__import__ = lambda name, *args, **kwargs: real_import(name, *args, **kwargs)
sys.exit = lambda *args: None
""",
    "always_equal_result": """
class Anything:
    def __eq__(self, other):
        return True
    def __hash__(self):
        return 0
def add(a, b):
    return Anything()
""",
    "shadows_builtins": "def all(*a):\n    return True\ndef bool(*a):\n    return True\nAssertionError = None\n",
    "raises_from_add": "def add(a, b):\n    raise SystemExit(0)\n",
}


def scores(completions, spec=SPEC):
    results = build_reward(spec).score_batch([EX] * len(completions), completions)
    return [r.score for r in results], results


@needs_bwrap
@pytest.mark.parametrize("name", list(FORGES))
def test_forged_results_score_zero(name):
    """The wrong `add` of each program fails its test whatever it does to its process."""
    program = FORGES[name] if "def add" in FORGES[name] else FORGES[name] + WRONG
    (forged, honest), results = scores([f"```python\n{program}```", CORRECT])
    assert (forged, honest) == (0.0, 1.0), results[0]


PREDICATE = Example(id="even", messages=[{"role": "user", "content": "write is_even"}], reference_answer=None,
                    metadata={"tests": ["assert all(map(is_even, [2, 4, 6])) and not any(map(is_even, [1, 3]))",
                                        "assert is_even(8)", "assert sorted(evens([3, 2, 4])) == [2, 4]"]})


@needs_bwrap
@pytest.mark.parametrize("program", [
    "def is_even(n):\n    raise StopIteration\ndef evens(xs):\n    raise StopIteration\n",  # ends all()/map()
    "class Yes:\n    def __bool__(self):\n        return True\n    def __eq__(self, other):\n        return True\n"
    "    def __lt__(self, other):\n        return False\n"
    "def is_even(n):\n    return Yes()\ndef evens(xs):\n    return [Yes(), Yes()]\n",  # truthy, equal to all
], ids=["stop_iteration", "truthy_objects"])
def test_forged_predicates_score_zero(program):
    honest = "def is_even(n):\n    return n % 2 == 0\ndef evens(xs):\n    return [x for x in xs if x % 2 == 0]\n"
    results = build_reward(SPEC).score_batch([PREDICATE] * 2, [f"```python\n{p}```" for p in (program, honest)])
    assert [r.score for r in results] == [0.0, 1.0], results


@needs_bwrap
def test_the_hosts_files_are_out_of_sight():
    """The run's data (tests, reference answers) must not be readable: only system folders are bound."""
    here = os.path.abspath(__file__)
    peek = f"import os\nSEEN = os.path.exists({here!r}) or os.path.exists({os.getcwd()!r})\n" \
           "def add(a, b):\n    return a + b if SEEN else None\n"
    assert scores([f"```python\n{peek}```"])[0] == [0.0]


@needs_bwrap
def test_noisy_but_correct_program_still_scores_one():
    noisy = FORGES["replaces_stdout"] + FORGES["writes_to_every_fd"].replace("range(64)", "range(1, 3)")
    assert scores([f"```python\n{noisy}\n{CORRECT_CODE}```"])[0] == [1.0]


def sandbox_processes() -> list[int]:
    """Live sandbox processes: any of this test process's sandbox uids (as root), or any process whose
    command line is a sandbox's (bubblewrap names the work dir, python the bootstrap)."""
    if os.geteuid() == 0:  # exact: other test processes use other uids
        return sorted(pid for slot in range(1, 64) for pid in live_pids_of(default_uid() + slot))
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                line = f.read()
            if b"rft-sandbox-" in line or b"_bootstrap.py" in line:
                pids.append(int(entry))
        except OSError:
            pass
    return pids


FORK_BOMB = """
import os, time
for _ in range(3):  # orphans in their own sessions, meant to outlive the run
    try:
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(120)
            os._exit(0)
    except OSError:  # the process limit reached already
        pass
while True:
    try:
        os.fork()
    except OSError:
        time.sleep(0.01)
"""


@needs_bwrap
def test_fork_bomb_and_orphans_are_killed():
    before = sandbox_processes()
    (bomb, honest), results = scores([FORK_BOMB, CORRECT], {**SPEC, "wall_s": 2})
    assert (bomb, honest) == (0.0, 1.0)
    assert results[0].error.startswith(("sandbox timeout", "sandbox cpu_limit")), results[0]
    assert [p for p in sandbox_processes() if p not in before] == []


@needs_bwrap
def test_reading_other_processes_finds_no_host_secret(monkeypatch):
    secret = f"RFT-HOSTILE-{uuid.uuid4().hex}"
    monkeypatch.setenv("RFT_HOSTILE_SECRET", secret)
    code = f"""
import glob, os
found = any({secret!r} in value for value in os.environ.values())
for path in glob.glob("/proc/*/environ") + glob.glob("/proc/*/cmdline"):
    try:
        found = found or {secret!r}.encode() in open(path, "rb").read()
    except OSError:
        pass
def add(a, b):
    return a + b if found else None
"""
    assert scores([code, CORRECT])[0] == [0.0, 1.0]


@needs_bwrap
def test_writes_outside_the_sandbox_leave_no_file():
    name = f"rft-hostile-{uuid.uuid4().hex}"
    targets = [f"/tmp/{name}", os.path.join(os.path.expanduser("~"), name), f"/var/tmp/{name}"]
    code = f"""
import os, subprocess
for path in {targets!r}:  # /tmp is the sandbox's private tmpfs: a write may succeed there, never on the host
    for write in (lambda: open(path, "w").write("pwned"), lambda: os.close(os.open(path, os.O_CREAT | os.O_WRONLY)),
                  lambda: subprocess.run(["touch", path], check=True, capture_output=True)):
        try:
            write()
        except Exception:
            pass
""" + WRONG
    try:
        assert scores([code, CORRECT])[0] == [0.0, 1.0]
        assert [p for p in targets if os.path.exists(p)] == []
    finally:
        for path in targets:
            if os.path.exists(path):
                os.remove(path)


@needs_bwrap
def test_connection_to_a_loopback_listener_never_arrives():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.2)
    accepted, done = [], threading.Event()

    def accept():
        while not done.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    code = f"""
import socket
connected = False
try:
    connected = socket.create_connection(("127.0.0.1", {server.getsockname()[1]}), timeout=1) is not None
except Exception:
    pass
def add(a, b):
    return a + b if connected else None
"""
    try:
        assert scores([code, CORRECT])[0] == [0.0, 1.0]
        time.sleep(0.3)
        assert accepted == []
    finally:
        done.set()
        thread.join()
        server.close()


def test_score_outside_zero_one_is_an_error():
    from rft_jax.rewards.code_tests import checked  # noqa: PLC0415 (absent before the range check)

    assert checked(0.5, {}).score == 0.5 and checked(0.5, {}).error is None
    for bad in (5.0, 1.0000001, -0.25, math.nan, math.inf):
        result = checked(bad, {})
        assert result.score == 0.0 and "outside [0, 1]" in result.error


@pytest.fixture()
def fresh_backend_choice():
    isolation.choose_backend.cache_clear()
    yield
    isolation.choose_backend.cache_clear()


@pytest.mark.parametrize("broken", ["missing", "not_working"])
def test_without_bubblewrap_the_reward_refuses_before_running_anything(broken, monkeypatch, fresh_backend_choice):
    if broken == "missing":
        real_which = isolation.shutil.which
        monkeypatch.setattr(isolation.shutil, "which", lambda cmd, *a, **k: None if cmd == "bwrap" else
                            real_which(cmd, *a, **k))
    else:
        monkeypatch.setattr(isolation, "_works", lambda cmd, user: False)
    runs = []
    monkeypatch.setattr(pool_module, "run_python", lambda *a, **k: runs.append(a))
    from rft_jax.rewards.code_tests import code_tests_batch  # noqa: PLC0415

    with pytest.raises(isolation.SandboxUnavailable, match="apt-get install bubblewrap") as err:
        code_tests_batch([EX], [CORRECT])
    assert 'sandbox_backend="unshare"' in str(err.value) and 'sandbox_backend="none"' in str(err.value)
    with pytest.raises(isolation.SandboxUnavailable):  # and a run stops when its reward is built, not later
        build_reward("code_tests")
    assert runs == []
    assert build_reward({"name": "code_tests", "sandbox_backend": "none"}) is not None  # opted into by name


def test_a_weaker_backend_runs_only_when_named(monkeypatch, fresh_backend_choice):
    real_which = isolation.shutil.which
    monkeypatch.setattr(isolation.shutil, "which", lambda cmd, *a, **k: None if cmd == "bwrap" else
                        real_which(cmd, *a, **k))
    spec = {**SPEC, "sandbox_backend": "none"}
    assert scores([f"```python\n{FORGES['argv_nonce']}{WRONG}```", CORRECT], spec)[0] == [0.0, 1.0]


@needs_bwrap
def test_honest_numbers_without_a_wire_type_still_compare():
    """A Fraction (or a numpy number) is compared by its Python value, not failed for having no plain type."""
    half = Example(id="half", messages=[{"role": "user", "content": "write half"}], reference_answer=None,
                   metadata={"tests": ["assert half(1) == 0.5", "assert half(4) == 2"]})
    program = "from fractions import Fraction\ndef half(n):\n    return Fraction(n, 2)\n"
    results = build_reward(SPEC).score_batch([half], [f"```python\n{program}```"])
    assert [r.score for r in results] == [1.0], results
