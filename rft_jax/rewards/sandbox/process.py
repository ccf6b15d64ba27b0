"""Run one Python program in the sandbox and report what happened, never raising for its behaviour.

The parent enforces what rlimits cannot: the wall clock and the output size. It
reads the child's output through one pipe, kills the whole process tree (process
group, PID namespace, and every process of the sandbox user id) at the end, and
removes the work dir.
"""

from __future__ import annotations

import dataclasses
import json
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from rft_jax.rewards.sandbox.isolation import choose_backend, namespace_prefix
from rft_jax.rewards.sandbox.limits import SandboxLimits

BOOTSTRAP = Path(__file__).with_name("bootstrap.py")
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclasses.dataclass(frozen=True)
class SandboxResult:
    status: str  # ok | error | timeout | cpu_limit | memory_limit | output_limit | stopped | sandbox_error
    returncode: int | None
    output: str  # stdout and stderr interleaved, truncated to the limit
    seconds: float
    backend: str

    @property
    def error(self) -> str | None:
        """A one-line, per-sample reason when the run did not finish cleanly."""
        if self.status == "ok":
            return None
        if self.status in REASONS:
            return f"{self.status}: {REASONS[self.status]}"
        tail = self.output.strip().splitlines()[-1:] or ["no output"]
        return f"{self.status} (exit {self.returncode}): {tail[0][:200]}"


REASONS = {
    "timeout": "wall-clock limit reached; process tree killed",
    "cpu_limit": "CPU time limit (RLIMIT_CPU) reached",
    "memory_limit": "MemoryError at the address-space limit (RLIMIT_AS)",
    "output_limit": "output exceeded the size limit; process tree killed",
    "stopped": "stopped by the caller; process tree killed",
}


def run_python(files: dict[str, str], entry: str, *, limits: SandboxLimits = SandboxLimits(),
               backend: str = "auto", uid: int | None = None, args: tuple[str, ...] = (),
               pass_fds: tuple[int, ...] = (), stop: threading.Event | None = None) -> SandboxResult:
    """Run `entry` (one of `files`, written to a fresh work dir) under `limits`.

    `uid`: when the host runs as root, the unprivileged user id to run as (give each
    concurrent run its own, see SandboxPool); defaults to one derived from our pid.
    `pass_fds`: descriptors the program inherits (pipes to another process). They become
    ours: closed once the program holds them (or on any failure), so its peer sees EOF when it ends.
    `stop`: when set, the run is killed and reported as `stopped` (its peer has finished).
    """
    owned = list(pass_fds)
    try:
        return _run(files, entry, limits, backend, uid, args, owned, stop)
    finally:
        _close(owned)  # those not handed over already


def _run(files: dict[str, str], entry: str, limits: SandboxLimits, backend: str, uid: int | None,
         args: tuple[str, ...], owned: list[int], stop: threading.Event | None) -> SandboxResult:
    as_root = os.geteuid() == 0
    run_uid = (uid if uid is not None else default_uid()) if as_root else None
    backend = choose_backend(backend, run_uid)
    workdir = tempfile.mkdtemp(prefix="rft-sandbox-")
    start = time.monotonic()
    try:
        for name, text in {**files, "_bootstrap.py": BOOTSTRAP.read_text()}.items():
            Path(workdir, name).write_text(text)
        if run_uid is not None:
            for path in [workdir, *(os.path.join(workdir, n) for n in os.listdir(workdir))]:
                os.chown(path, run_uid, run_uid)
        nproc = limits.max_procs if run_uid is not None else count_processes(os.geteuid()) + limits.max_procs
        config = {**dataclasses.asdict(limits), "nproc": nproc}
        cmd = [*namespace_prefix(backend, workdir, unprivileged=run_uid is not None or not as_root),
               interpreter(run_uid is not None), "-I", "_bootstrap.py", json.dumps(config), entry, *args]
        env = {"PATH": SAFE_PATH, "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
        user = {"user": run_uid, "group": run_uid, "extra_groups": []} if run_uid is not None else {}
        try:
            proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True, pass_fds=tuple(owned),
                                    **user)
        except OSError as err:
            return SandboxResult("sandbox_error", None, f"could not start sandbox: {err}", 0.0, backend)
        finally:
            _close(owned)
        output, reason = collect(proc, limits.max_output_bytes, start + limits.wall_s, stop)
        if reason == "stopped" and proc.poll() is not None:  # it ended on its own first: say how
            reason = None
        kill_tree(proc, run_uid)
        status = reason or classify(proc.returncode, output)
        text = output.decode("utf-8", "replace")
        return SandboxResult(status, proc.returncode, text, time.monotonic() - start, backend)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def collect(proc: subprocess.Popen, max_bytes: int, deadline: float,
            stop: threading.Event | None = None) -> tuple[bytes, str | None]:
    """Read output until EOF; stop early at the deadline, the size limit or `stop` (returning why)."""
    chunks, size = [], 0
    poll = 0.5 if stop is None else 0.02
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return b"".join(chunks), "timeout"
            if stop is not None and stop.is_set():
                return b"".join(chunks), "stopped"
            if not sel.select(timeout=min(remaining, poll)):
                continue
            data = os.read(proc.stdout.fileno(), 65536)
            if not data:
                break
            chunks.append(data)
            size += len(data)
            if size > max_bytes:
                return b"".join(chunks)[:max_bytes], "output_limit"
    while proc.poll() is None:  # output closed but still running: wait, heeding `stop`
        if time.monotonic() >= deadline:
            return b"".join(chunks), "timeout"
        if stop is not None and stop.is_set():
            return b"".join(chunks), "stopped"
        time.sleep(poll / 5)
    return b"".join(chunks), None


def classify(returncode: int | None, output: bytes) -> str:
    if returncode == 0:
        return "ok"
    sig = -returncode if returncode is not None and returncode < 0 else (
        returncode - 128 if returncode is not None and returncode > 128 else None)
    if sig in (signal.SIGXCPU,) or (sig == signal.SIGKILL and b"CPU" in output):
        return "cpu_limit"
    if b"MemoryError" in output or returncode == 3 and b"memory limit" in output:
        return "memory_limit"
    return "error"


def kill_tree(proc: subprocess.Popen, run_uid: int | None) -> None:
    """Kill everything the run started, innermost first so every process is reaped by its own
    parent: the namespace's init (its death takes the namespace with it), then the process
    group, then, when we switched user, any process left with that uid."""
    if proc.poll() is None:
        for child in children_of(proc.pid):
            _kill(child)
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if run_uid is not None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and live_pids_of(run_uid):  # a fork bomb can race one sweep
            for pid in live_pids_of(run_uid):
                _kill(pid)
            time.sleep(0.01)
    proc.stdout.close()


def _close(fds: list[int]) -> None:
    """Close and forget each descriptor, so a second call cannot close a number reused meanwhile."""
    while fds:
        try:
            os.close(fds.pop())
        except OSError:
            pass


def children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def live_pids_of(uid: int) -> list[int]:
    """Processes of `uid` that are not zombies (a zombie is already dead, only unreaped)."""
    live = []
    for pid in pids_of(uid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    live.append(pid)
        except OSError:
            pass
    return live


def pids_of(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    pids.append(int(entry))
            except FileNotFoundError:
                pass
    return pids


def count_processes(uid: int) -> int:
    return len(pids_of(uid))


def default_uid() -> int:
    """An unprivileged uid unique to this host process (no passwd entry needed)."""
    return 200_000 + (os.getpid() % 100_000) * 64


def interpreter(switched_user: bool) -> str:
    """Our interpreter if the sandbox user can execute it, else the system python3."""
    exe = os.path.realpath(sys.executable)
    if not switched_user or _world_executable(exe):
        return exe
    return shutil.which("python3", path=SAFE_PATH) or exe


def _world_executable(path: str) -> bool:
    parts = Path(path).parents
    return all(os.stat(p).st_mode & stat.S_IXOTH for p in parts) and bool(os.stat(path).st_mode & stat.S_IXOTH)
