"""First code to run inside the sandbox: apply limits, then run the target script.

Stdlib only and self-contained: it is copied into the sandbox's work dir and run
with `python -I`. Limits are set here, before any untrusted code runs, and every
process the code starts inherits them.
"""

import json
import os
import resource
import runpy
import sys

MB = 1024 * 1024


def apply_limits(limits):
    def cap(kind, value, slack=0):
        soft, hard = resource.getrlimit(kind)
        top = value + slack if hard == resource.RLIM_INFINITY else min(value + slack, hard)
        resource.setrlimit(kind, (min(value, top), top))

    cap(resource.RLIMIT_CPU, int(limits["cpu_s"]), slack=1)  # SIGXCPU at the soft limit, SIGKILL 1 s later
    cap(resource.RLIMIT_AS, int(limits["memory_mb"]) * MB)
    cap(resource.RLIMIT_FSIZE, int(limits["file_size_mb"]) * MB)
    cap(resource.RLIMIT_NOFILE, int(limits["max_open_files"]))
    cap(resource.RLIMIT_NPROC, int(limits["nproc"]))
    cap(resource.RLIMIT_CORE, 0)


def install_guard(workdir):
    """Refuse sockets, writes outside `workdir`, and other processes' /proc files (their
    environment) at the Python level; audit hooks cannot be removed once added."""
    root = os.path.realpath(workdir)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def inside(path):
        try:
            real = os.path.realpath(os.fsdecode(path) if not isinstance(path, int) else "")
        except (TypeError, ValueError):
            return False
        return real == root or real.startswith(root + os.sep)

    def hook(event, args):
        if event in ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"):
            raise PermissionError(f"sandbox: network access refused ({event})")
        if event == "open" and args[0] is not None and not isinstance(args[0], int):
            path = os.fsdecode(args[0])
            if path.startswith("/proc/") and not path.startswith(("/proc/self/", "/proc/thread-self/")):
                raise PermissionError(f"sandbox: reading other processes' /proc entries refused: {path}")
            mode, flags = args[1], args[2]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & write_flags)
            if writing and not inside(args[0]):
                raise PermissionError(f"sandbox: writing outside the work dir refused: {args[0]}")
        if event in ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.symlink", "os.link", "os.chmod"):
            if args and isinstance(args[0], (str, bytes)) and not inside(args[0]):
                raise PermissionError(f"sandbox: changing files outside the work dir refused: {args[0]}")

    sys.addaudithook(hook)


def act_as_init():
    """As PID 1 of a new PID namespace the kernel shields us from signals we do not handle
    (so SIGXCPU would be ignored) and orphans are ours to reap. So fork: the child runs the
    code; this process reaps everything and exits with the child's status (128+signal)."""
    child = os.fork()
    if child == 0:
        return
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(1)
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            os._exit(128 - code if code < 0 else code)


def main():
    limits = json.loads(sys.argv[1])
    target = sys.argv[2]
    apply_limits(limits)
    if os.getpid() == 1:
        act_as_init()
    workdir = os.getcwd()
    sys.path.insert(0, workdir)
    sys.argv = [target] + sys.argv[3:]
    if limits.get("python_guard"):
        install_guard(workdir)
    try:
        runpy.run_path(target, run_name="__main__")
    except MemoryError:
        sys.stderr.write("\nsandbox: MemoryError (memory limit reached)\n")
        sys.stderr.flush()
        os._exit(3)


if __name__ == "__main__":
    main()
