"""Resource limits for one sandboxed execution."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    cpu_s: int = 5
    """CPU seconds (RLIMIT_CPU): stops busy loops even when the wall clock is generous."""
    wall_s: float = 10.0
    """Wall-clock seconds before the whole process tree is killed (stops sleeping or blocked code)."""
    memory_mb: int = 1024
    """Address-space limit (RLIMIT_AS); allocations beyond it raise MemoryError inside the sandbox."""
    file_size_mb: int = 16
    """Largest file the code may write (RLIMIT_FSIZE)."""
    max_procs: int = 32
    """Processes and threads the sandbox user may have at once (RLIMIT_NPROC): stops fork bombs."""
    max_open_files: int = 64
    max_output_bytes: int = 64 * 1024
    """Bytes of stdout+stderr kept; more and the run is killed with status output_limit."""
    python_guard: bool = True
    """Also install a Python audit hook refusing sockets and writes outside the work dir.
    Defence in depth only: native code (ctypes) can bypass it, the OS layers cannot be."""
