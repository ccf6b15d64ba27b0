"""The code sandbox against hostile programs: each case is contained with a clear per-sample
status, and the host (this test process, its files, its network, its process table) is unaffected.

Cases run with the default configuration (all layers) on the strongest backend that works
here, named explicitly (bubblewrap in CI; `auto` would refuse anything weaker). Cases marked
`os_layer` repeat with the Python guard off, to show the OS layer alone contains them; they
need a namespace backend (bubblewrap or unshare) and are skipped without one.
"""

import dataclasses
import os
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from rft_jax.rewards.sandbox import SandboxLimits, SandboxPool, run_python
from rft_jax.rewards.sandbox.isolation import BACKENDS, SandboxUnavailable, choose_backend
from rft_jax.rewards.sandbox.process import default_uid, pids_of

FAST = SandboxLimits(cpu_s=2, wall_s=4, memory_mb=512, max_procs=16, max_output_bytes=16 * 1024)
NO_GUARD = SandboxLimits(cpu_s=2, wall_s=4, memory_mb=512, max_procs=16, max_output_bytes=16 * 1024,
                         python_guard=False)
AS_ROOT = os.geteuid() == 0
UID = default_uid() + 1000 if AS_ROOT else None


def _strongest() -> str:
    for name in BACKENDS:
        try:
            return choose_backend(name, UID)
        except SandboxUnavailable:
            pass
    raise AssertionError("backend 'none' always works")


BACKEND = _strongest()
os_layer = pytest.mark.skipif(BACKEND == "none", reason="no namespace backend (install bubblewrap)")


def run(code, limits=FAST):
    return run_python({"main.py": code}, "main.py", limits=limits, uid=UID, backend=BACKEND)


@pytest.fixture(autouse=True)
def host_is_unaffected():
    yield
    if UID is not None:
        assert pids_of(UID) == [], "sandbox processes left behind"
    started = time.monotonic()
    assert subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True).stdout == b"1\n"
    assert time.monotonic() - started < 10


def test_normal_program_runs_with_scrubbed_environment():
    result = run("import os, sys; print('hello', sorted(os.environ)); print(os.getcwd())")
    assert result.status == "ok" and result.error is None
    assert "hello ['HOME', 'LANG', 'PATH'" in result.output


def test_infinite_loop_hits_cpu_limit():
    result = run("while True:\n    pass\n", SandboxLimits(cpu_s=1, wall_s=6))
    assert result.status == "cpu_limit" and result.error.startswith("cpu_limit")
    assert result.seconds < 5


def test_sleeping_forever_hits_wall_limit():
    result = run("import time\nprint('sleeping', flush=True)\ntime.sleep(3600)\n", SandboxLimits(wall_s=1))
    assert result.status == "timeout" and "sleeping" in result.output
    assert result.seconds < 3


FORK_COUNT = """
import os, time
n = 0
for i in range(200):
    try:
        if os.fork() == 0:
            os.close(1); os.close(2); time.sleep(60); os._exit(0)
        n += 1
    except OSError as err:
        print("fork refused:", err)
        break
print("forks", n, flush=True)
"""
FORK_BOMB = """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""


def test_fork_bomb_is_capped_and_cleaned_up():
    """The Python guard does not touch fork: this is the OS layer (RLIMIT_NPROC, PID namespace, kill sweep)."""
    limits = dataclasses.replace(FAST, wall_s=2)
    counted = run(FORK_COUNT, limits)
    assert "fork refused: [Errno 11]" in counted.output
    forks = int(counted.output.split("forks")[1].split()[0])
    assert forks < limits.max_procs
    bomb = run(FORK_BOMB, limits)
    assert bomb.status in ("timeout", "cpu_limit")
    assert bomb.seconds < limits.wall_s + 3


def test_memory_bomb_hits_memory_limit():
    result = run("chunks = []\nwhile True:\n    chunks.append(bytearray(32 * 2**20))\n",
                 SandboxLimits(memory_mb=256, wall_s=6))
    assert result.status == "memory_limit" and "MemoryError" in result.output


def _outside_targets(tmp_path_factory):
    host_dir = tmp_path_factory.mktemp("host")  # under /tmp
    os.chmod(host_dir, 0o777)
    var_dir = f"/var/tmp/rft-sandbox-test-{uuid.uuid4().hex}"
    os.mkdir(var_dir)
    os.chmod(var_dir, 0o777)
    return [str(host_dir / "escape.txt"), f"{var_dir}/escape.txt", "/etc/rft-escape.txt",
            os.path.join(os.getcwd(), "rft-escape.txt")], var_dir


WRITE = """
import sys
for path in sys.argv[1:]:
    try:
        with open(path, "w") as f:
            f.write("pwned")
        print("WROTE", path)
    except OSError as err:
        print("refused", path, type(err).__name__, err)
open("inside.txt", "w").write("fine")
print("inside ok")
"""


@pytest.mark.parametrize("limits", [FAST, pytest.param(NO_GUARD, marks=pytest.mark.skipif(
    BACKEND != "bwrap", reason="only bubblewrap makes the file system read-only"))], ids=["default", "guard_off"])
def test_writing_outside_the_work_dir_is_refused(limits, tmp_path_factory):
    targets, var_dir = _outside_targets(tmp_path_factory)
    try:
        result = run_python({"main.py": WRITE}, "main.py", limits=limits, uid=UID, args=tuple(targets),
                            backend=BACKEND)
        assert result.status == "ok" and "inside ok" in result.output
        assert "WROTE" not in result.output
        assert sum(line.startswith("refused") for line in result.output.splitlines()) == len(targets)
        for path in targets:
            assert not os.path.exists(path), path
    finally:
        for path in targets[1:2]:
            if os.path.exists(path):
                os.remove(path)
        os.rmdir(var_dir)


ENV = """
import glob, os
print("ENV", dict(os.environ))
for path in ["/proc/1/environ", f"/proc/{os.getppid()}/environ", *glob.glob("/proc/*/environ")]:
    try:
        print("READ", path, open(path, "rb").read().replace(b"\\0", b" "))
    except OSError as err:
        print("refused", path, err)
"""


@pytest.mark.parametrize("limits", [FAST, pytest.param(NO_GUARD, marks=pytest.mark.skipif(
    BACKEND == "none" and not AS_ROOT, reason="without namespaces or a user switch, /proc shows our environ"))],
    ids=["default", "guard_off"])
def test_parent_environment_secrets_are_not_visible(limits, monkeypatch):
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    monkeypatch.setenv("RFT_TEST_API_KEY", secret)
    result = run(ENV, limits)
    assert result.status in ("ok", "output_limit")
    assert "ENV {" in result.output
    assert secret not in result.output and "RFT_TEST_API_KEY" not in result.output


@pytest.fixture()
def host_listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.2)
    accepted = []

    def accept():
        end = time.monotonic() + 8
        while time.monotonic() < end:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    server.close()


SOCKET = """
import socket, sys
s = socket.socket()
s.settimeout(2)
try:
    s.connect(("127.0.0.1", int(sys.argv[1])))
    print("CONNECTED")
except OSError as err:
    print("refused", type(err).__name__, err)
"""


@pytest.mark.parametrize("limits", [FAST, pytest.param(NO_GUARD, marks=os_layer)], ids=["default", "guard_off"])
def test_socket_to_loopback_is_refused(limits, host_listener):
    port, accepted = host_listener
    result = run_python({"main.py": SOCKET}, "main.py", limits=limits, uid=UID, args=(str(port),), backend=BACKEND)
    assert result.status == "ok" and "refused" in result.output and "CONNECTED" not in result.output
    time.sleep(0.3)
    assert accepted == []


def test_printing_a_gigabyte_hits_output_limit():
    code = "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)\n"
    result = run(code)
    assert result.status == "output_limit"
    assert len(result.output) <= FAST.max_output_bytes
    assert result.seconds < 3


def test_pool_bounds_concurrency():
    pool = SandboxPool(max_workers=2, limits=FAST, backend=BACKEND)
    code = "import time\nprint('start', time.time(), flush=True)\ntime.sleep(0.6)\nprint('end', time.time())\n"
    results = pool.map([({"main.py": code}, "main.py")] * 4)
    spans = [tuple(float(line.split()[1]) for line in r.output.split("\n")[:2]) for r in results]
    for start, _ in spans:
        assert sum(s <= start < e for s, e in spans) <= 2
    assert all(r.status == "ok" for r in results)


def test_backend_choice_is_logged(caplog):
    choose_backend.cache_clear()
    with caplog.at_level("INFO", logger="rft_jax.rewards.sandbox.isolation"):
        assert choose_backend(BACKEND, UID) == BACKEND
    assert "sandbox:" in caplog.text


def test_auto_is_bubblewrap_or_a_refusal_naming_the_fix():
    """`auto` never falls back to a weaker backend (tests/test_code_reward_hostile.py simulates a missing one)."""
    try:
        assert choose_backend("auto", UID) == "bwrap"
    except SandboxUnavailable as err:
        assert BACKEND != "bwrap" and "apt-get install bubblewrap" in str(err)


@pytest.mark.parametrize("backend", ["bwrap", "unshare", "none"])
def test_default_config_contains_escapes_on_every_backend(backend, host_listener, monkeypatch):
    """The fallbacks are weaker (see isolation.py) but with the default layers on, each still
    refuses the network, the parent's environment and writes outside the work dir."""
    try:
        choose_backend(backend, UID)
    except RuntimeError:
        pytest.skip(f"{backend} does not work here")
    port, accepted = host_listener
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    monkeypatch.setenv("RFT_TEST_API_KEY", secret)
    escape = f"/var/tmp/rft-escape-{uuid.uuid4().hex}"
    code = SOCKET + ENV + f"\ntry:\n    open({escape!r}, 'w')\n    print('WROTE')\nexcept OSError as e:\n" \
        "    print('refused write', e)\n"
    result = run_python({"main.py": code}, "main.py", limits=FAST, uid=UID, backend=backend, args=(str(port),))
    assert result.backend == backend and result.status in ("ok", "output_limit")
    assert "CONNECTED" not in result.output and secret not in result.output
    assert "WROTE" not in result.output and not os.path.exists(escape)
    time.sleep(0.3)
    assert accepted == []
