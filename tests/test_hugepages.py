"""Entry points re-execute themselves once with glibc's huge-page tunable, only where it can help."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

from rft_jax.hugepages import TUNABLE, _thp_mode, hugepage_environ

GLIBC = ("glibc", "2.36")


def test_sets_the_tunable_when_the_kernel_grants_huge_pages_on_request():
    assert hugepage_environ({}, "madvise", GLIBC)["GLIBC_TUNABLES"] == TUNABLE
    kept = hugepage_environ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "PATH": "/bin"}, "madvise", GLIBC)
    assert kept == {"GLIBC_TUNABLES": f"glibc.malloc.arena_max=2:{TUNABLE}", "PATH": "/bin"}


def test_leaves_the_process_alone_where_it_would_change_nothing():
    assert hugepage_environ({}, "always", GLIBC) is None  # huge pages already
    assert hugepage_environ({}, "never", GLIBC) is None
    assert hugepage_environ({}, None, GLIBC) is None  # no THP at all
    assert hugepage_environ({}, "madvise", ("glibc", "2.31")) is None  # tunable too new for this glibc
    assert hugepage_environ({}, "madvise", ("", "")) is None  # musl etc.
    assert hugepage_environ({"GLIBC_TUNABLES": TUNABLE}, "madvise", GLIBC) is None  # the re-executed process
    assert hugepage_environ({"RFT_JAX_HUGEPAGES": "0"}, "madvise", GLIBC) is None  # opted out


def test_thp_mode_reads_the_bracketed_choice(tmp_path):
    f = tmp_path / "enabled"
    f.write_text("always [madvise] never\n")
    assert _thp_mode(str(f)) == "madvise"
    assert _thp_mode(str(tmp_path / "missing")) is None


def test_reexec_runs_the_same_command_once_with_the_tunable():
    code = ("import os, sys; from rft_jax.hugepages import reexec_with_hugepages; print('start', flush=True); "
            "reexec_with_hugepages(); print(os.environ.get('GLIBC_TUNABLES'), sys.argv[1:])")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "RFT_JAX_HUGEPAGES")}
    out = subprocess.run([sys.executable, "-c", code, "arg"], env=env, capture_output=True, text=True, check=True).stdout
    expected = hugepage_environ(env, _thp_mode(), platform.libc_ver())
    if expected is None:  # this machine gains nothing: no re-exec
        assert out.splitlines() == ["start", "None ['arg']"]
    else:
        assert out.splitlines() == ["start", "start", f"{TUNABLE} ['arg']"]
