"""How the sandbox is isolated from the host: bubblewrap, or a weaker backend only when named.

Backends:
  bwrap    bubblewrap: new network, PID, IPC and UTS namespaces; of the host's
           files only the system folders and the interpreter's, read-only (not
           the run's data); a private /tmp; only the work dir writable.
  unshare  util-linux unshare: new network and PID namespaces. The file system is
           not made read-only, so writes outside the work dir are stopped only by
           the dropped user id (when the host runs as root) and the Python guard.
  none     no namespaces: no network isolation except the Python guard.
`auto` means bubblewrap and fails closed: when bubblewrap is missing or does not
work here, it raises SandboxUnavailable (naming the fix) before any code runs. A
weaker backend is used only when the caller names it (`backend="unshare"`/"none").
On top of every backend: rlimits, a scrubbed environment, a fresh work dir, and,
when running as root, a per-slot unprivileged user id.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import stat
import subprocess
import sys

log = logging.getLogger(__name__)
BACKENDS = ("bwrap", "unshare", "none")
FIX = ("install bubblewrap (`apt-get install bubblewrap`; in a container, allow user namespaces), or opt into "
       "a weaker isolation by naming it: sandbox_backend=\"unshare\" (no read-only file system) or "
       "sandbox_backend=\"none\" (no namespaces: only rlimits and a Python audit hook)")


class SandboxUnavailable(RuntimeError):
    """The requested isolation does not work on this machine; raised before any code runs."""


def _works(cmd: list[str], user: int | None) -> bool:
    try:
        kwargs = {"user": user, "group": user, "extra_groups": []} if user is not None else {}
        return subprocess.run(cmd + ["true"], capture_output=True, timeout=10, **kwargs).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@functools.cache
def choose_backend(preferred: str = "auto", probe_uid: int | None = None) -> str:
    """The backend to run with, tried here (not just found on PATH); never a silent downgrade."""
    if preferred not in ("auto", *BACKENDS):
        raise ValueError(f"sandbox backend must be one of auto, {', '.join(BACKENDS)}; got {preferred!r}")
    backend = "bwrap" if preferred == "auto" else preferred
    unprivileged = probe_uid is not None or os.geteuid() != 0
    if backend != "none" and not (shutil.which(backend)
                                  and _works(namespace_prefix(backend, "/", unprivileged=unprivileged), probe_uid)):
        raise SandboxUnavailable(f"sandbox backend {backend!r} does not work on this machine; {FIX}")
    if backend == "bwrap":
        log.info("sandbox: using bubblewrap (network, PID namespaces; read-only root file system)")
    elif backend == "unshare":
        log.warning("sandbox: using `unshare` as requested: network and PID namespaces only; the file "
                    "system is not read-only outside the work dir")
    else:
        log.warning("sandbox: backend 'none' as requested: NETWORK IS NOT ISOLATED beyond the Python guard")
    return backend


SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")


def _reachable_by_others(folder: str) -> bool:
    """Whether another user can reach `folder` (every folder on its path lets others through): a sandbox run
    under its own uid cannot bind a path it cannot reach (bubblewrap refuses to start)."""
    path = os.path.realpath(folder)
    while True:
        if not os.stat(path).st_mode & stat.S_IXOTH:
            return False
        if path == "/":
            return True
        path = os.path.dirname(path)


@functools.cache
def system_binds(other_user: bool = False) -> tuple[str, ...]:
    """What a bubblewrap sandbox sees of the host, read-only: the system's programs and libraries and the
    interpreter's own prefix, never the whole file system (which would show a program the run's data files,
    tests and reference answers included). `other_user`: the sandbox runs under a uid of its own."""
    out: list[str] = []
    for folder in dict.fromkeys((*SYSTEM_DIRS, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable)))):
        if os.path.islink(folder):  # e.g. /bin -> usr/bin on merged-/usr systems
            out += ["--symlink", os.readlink(folder), folder]
        elif os.path.isdir(folder) and (not other_user or _reachable_by_others(folder)):
            out += ["--ro-bind", folder, folder]
    return tuple(out)


def namespace_prefix(backend: str, workdir: str, *, unprivileged: bool) -> list[str]:
    """The command that wraps the interpreter; `unprivileged` when it will not run as root."""
    if backend == "bwrap":
        return ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--as-pid-1", *system_binds(unprivileged and os.geteuid() == 0),
                "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
                "--tmpfs", "/dev/shm", "--bind", workdir, workdir, "--chdir", workdir]
    if backend == "unshare":
        user = ["--user", "--map-root-user"] if unprivileged else []
        return ["unshare", *user, "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "--mount"]
    return []
