"""Benchmark of kernels/fused_logprob: peak memory and forward+backward time against naive logits.

    python -m benchmarks.kernels                      # CPU default: ~3 min on 2 idle cores, more if shared
    python -m benchmarks.kernels --sizes 16384:151936:1536 --repeats 3   # one size, timed
    python -m benchmarks.kernels --memory-only        # compile-only memory table for the full grid

What is measured, for the step `value_and_grad(sum(a * logprob + b * entropy))` w.r.t. hidden and
unembedding (the training use):
- peak memory: `temp + output` bytes of the compiled executable (`compiled.memory_analysis()`),
  i.e. XLA's buffer assignment, which packs temporaries into one arena sized at their peak. The
  arguments (hidden, unembedding, ids) are the same for every implementation and left out. It
  needs only compilation, so it is reported for the whole GRID even where the naive version
  could not run on this machine.
- time: wall clock of the compiled step, implementations interleaved within each repeat (the
  machine is shared, so interleaving keeps the comparison fair) and the minimum kept.
"naive" is kernels/fused_logprob/reference.py: full [N, V] float32 logits, autodiff backward.

Targets, i.e. what makes the kernel worth having: memory <= 1/8 of naive at N=16k, V=151,936; on CPU
xla_chunked no slower than naive; on GPU pallas_gpu at least as fast as naive and within 2x of the
roofline bound printed. The timed table repeats each implementation's compiled peak beside its time, and
judges the backend's default kernel ("fused": pallas_gpu on GPU, xla_chunked elsewhere) against naive:
at most 1/8 of its memory and at least its speed. An implementation that fails to compile or run is
reported as failed in its cell (the others are still measured). `--json` writes rows and raw figures
for benchmarks/device_suite.sh.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import jax
import jax.numpy as jnp

from benchmarks.device_report import print_rows, row, write_part
from kernels.fused_logprob import api
from rft_jax.hugepages import reexec_with_hugepages

GRID = [(n, v, d) for n in (4096, 16384) for v in (49152, 151936) for d in (576, 1536)]
CPU_TIMED = [(4096, 49152, 576), (4096, 49152, 1536)]
GPU_TIMED = GRID
GIB = 2**30

# H100 SXM / H200 dense bf16 tensor-core peak and HBM bandwidth, for the roofline bound.
GPU_PEAKS = {"H100": (989e12, 3.35e12), "H200": (989e12, 4.8e12)}


def _implementations() -> list[str]:
    names = ["naive", "xla_chunked"]
    return names + (["pallas_gpu"] if jax.default_backend() == "gpu" else [])


def _step(name: str, temperature: float = 1.0):
    """jitted (hidden, unembed, ids, a, b) -> (loss, (d hidden, d unembed))."""
    impl = "reference" if name == "naive" else name

    def loss(h, w, t, a, b):
        lp, ent = api.token_logprobs_and_entropy(h, w, t, temperature=temperature, implementation=impl)
        return jnp.sum(a * lp + b * ent)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def _abstract_inputs(n, v, d, dtype):
    f = jax.ShapeDtypeStruct
    return (f((n, d), dtype), f((d, v), dtype), f((n,), jnp.int32), f((n,), jnp.float32), f((n,), jnp.float32))


def _inputs(n, v, d, dtype):
    k = jax.random.split(jax.random.PRNGKey(0), 5)
    h = jax.random.normal(k[0], (n, d), dtype)
    w = (jax.random.normal(k[1], (d, v)) / d**0.5).astype(dtype)
    t = jax.random.randint(k[2], (n,), 0, v)
    return h, w, t, jax.random.normal(k[3], (n,)), jax.random.uniform(k[4], (n,))


def _peak_bytes(compiled) -> int:
    ma = compiled.memory_analysis()
    return ma.temp_size_in_bytes + ma.output_size_in_bytes


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def _available_bytes() -> int:
    """Free device memory on an accelerator, else the host's MemAvailable."""
    stats = jax.devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
    if stats and "bytes_limit" in stats:
        return stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
    return info.get("MemAvailable", 0)


def _roofline_s(n, v, d, dtype, device_kind: str) -> float | None:
    """Lower bound for a recomputing kernel: max(4 matmuls of 2NDV flops, minimal HBM traffic)."""
    peaks = next((p for key, p in GPU_PEAKS.items() if key in device_kind), None)
    if peaks is None:
        return None
    flops, bandwidth = peaks
    item = jnp.dtype(dtype).itemsize
    # read h, W (fwd + bwd), write dh, dW (float32 accumulators), a few [N] vectors.
    traffic = 2 * (n * d + d * v) * item + (n * d + d * v) * 4 + 40 * n
    return max(4 * 2 * n * d * v / flops, traffic / bandwidth)


def _failure(err: Exception) -> str:
    return f"failed: {type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"


def memory_table(sizes, dtype) -> list[dict]:
    rows = []
    for n, v, d in sizes:
        r = {"N": n, "V": v, "D": d}
        for name in _implementations():
            try:
                r[name] = _peak_bytes(_step(name).lower(*_abstract_inputs(n, v, d, dtype)).compile())
            except Exception as err:  # noqa: BLE001 - one kernel failing to compile must not hide the others
                r[name] = _failure(err)
        rows.append(r)
    return rows


def _time_once(compiled, args) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    return time.perf_counter() - t0


def time_table(sizes, dtype, repeats: int, max_gib: float) -> list[dict]:
    rows = []
    for n, v, d in sizes:
        args = _inputs(n, v, d, dtype)
        compiled, r = {}, {"N": n, "V": v, "D": d}
        budget = min(max_gib * GIB, 0.8 * (_available_bytes() - 2 * sum(x.nbytes for x in args)))
        for name in _implementations():
            try:
                c = _step(name).lower(*args).compile()
                r[f"{name} peak"] = _peak_bytes(c)
                if _peak_bytes(c) > budget:
                    r[name] = f"skipped: would need {_peak_bytes(c) / GIB:.1f} GiB"
                    continue
                _time_once(c, args)  # warm up
            except Exception as err:  # noqa: BLE001 - reported in the cell; the other kernels are still timed
                r[name] = _failure(err)
                continue
            compiled[name] = c
        times = {name: [] for name in compiled}
        for _ in range(repeats):
            for name, c in compiled.items():
                times[name].append(_time_once(c, args))
        r.update({name: min(ts) for name, ts in times.items()})
        rows.append(r)
        print(f"  timed N={n} V={v} D={d}: " + ", ".join(f"{k}={_fmt_s(r[k])}" for k in _implementations()),
              flush=True)
    return rows


def _device_high_water() -> int | None:
    """The allocator's peak bytes over the whole process (None on a CPU): a check on the compiled figures."""
    return (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")


def goal_rows(time_rows: list[dict]) -> list[dict]:
    """The backend's fused kernel against naive at each timed size: <= 1/8 of its memory, >= its speed."""
    backend = jax.default_backend()  # the backend's Pallas kernel where it has one, else the default
    fused, out = api.resolve_name("pallas" if backend in ("gpu", "tpu") else None, backend), []
    for r in time_rows:
        size = f"N={r['N']} V={r['V']} D={r['D']}"
        mem = [r.get(f"{x} peak") for x in ("naive", fused)]
        ok_mem = None not in mem
        out.append(row(f"{fused} peak memory / naive ({size})",
                       f"{mem[1] / GIB:.3g} / {mem[0] / GIB:.3g} GiB = 1/{mem[0] / mem[1]:.1f}" if ok_mem else
                       f"{fused}: {r.get(fused)}", "<= 1/8", ok_mem and mem[1] * 8 <= mem[0]))
        times = [r.get(x) for x in ("naive", fused)]
        ok_t = all(isinstance(t, float) for t in times)
        out.append(row(f"{fused} time / naive ({size})",
                       f"{times[1] * 1e3:.2f} / {times[0] * 1e3:.2f} ms = {times[0] / times[1]:.2f}x" if ok_t else
                       f"naive: {_fmt_s(times[0])}; {fused}: {_fmt_s(times[1])}", ">= 1x naive speed",
                       ok_t and times[1] <= times[0]))
    return out


def _fmt_s(x) -> str:
    return x if isinstance(x, str) else "n/a" if x is None else f"{x:.3f}s"


def _gib(x) -> str:
    return x if isinstance(x, str) else f"{x / GIB:.2f}"


def _ratio(a, b, fmt: str) -> str:
    return fmt.format(a / b) if isinstance(a, (int, float)) and isinstance(b, (int, float)) else "n/a"


def _markdown(mem_rows, time_rows, dtype, device_kind) -> str:
    names = _implementations()
    others = [n for n in names if n != "naive"]
    out = []
    if mem_rows:
        out += ["### Peak memory of forward+backward (compiled temp + output, arguments excluded)", ""]
        out.append("| N | V | D | " + " | ".join(f"{n} GiB" for n in names) + " | "
                   + " | ".join(f"{n}/naive" for n in others) + " |")
        out.append("|---" * (3 + len(names) + len(others)) + "|")
    for r in mem_rows:
        out.append(f"| {r['N']} | {r['V']} | {r['D']} | " + " | ".join(_gib(r[n]) for n in names)
                   + " | " + " | ".join(_ratio(r["naive"], r[n], "1/{:.1f}") for n in others) + " |")
    out += ["", "### Time of forward+backward (min over interleaved repeats), with each one's compiled peak", ""]
    roof = jax.default_backend() == "gpu"
    out.append("| N | V | D | " + " | ".join(names) + " | " + " | ".join(f"naive/{n} (speed-up)" for n in others)
               + " | " + " | ".join(f"{n} GiB" for n in names) + " | " + " | ".join(f"{n}/naive mem" for n in others)
               + (" | roofline bound | pallas/bound |" if roof else " |"))
    out.append("|---" * (3 + 2 * len(names) + 2 * len(others) + (2 if roof else 0)) + "|")
    for r in time_rows:
        line = (f"| {r['N']} | {r['V']} | {r['D']} | " + " | ".join(_fmt_s(r.get(n)) for n in names)
                + " | " + " | ".join(_ratio(r.get("naive"), r.get(n), "{:.2f}x") for n in others)
                + " | " + " | ".join(_gib(r.get(f"{n} peak", "n/a")) for n in names)
                + " | " + " | ".join(_ratio(r.get("naive peak"), r.get(f"{n} peak"), "1/{:.1f}") for n in others)
                + " |")
        if roof:
            bound = _roofline_s(r["N"], r["V"], r["D"], dtype, device_kind)
            pallas = r.get("pallas_gpu")
            line += (f" {bound * 1e3:.2f} ms | {pallas / bound:.2f} |" if bound and isinstance(pallas, float)
                     else " n/a | n/a |")
        out.append(line)
    return "\n".join(out)


def _parse_sizes(text: str) -> list[tuple[int, int, int]]:
    """N:V:D,... ("none": no sizes)."""
    return [] if text == "none" else [tuple(int(x) for x in item.split(":")) for item in text.split(",") if item]


def main(argv: list[str] | None = None) -> int:
    on_gpu = jax.default_backend() == "gpu"
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=_parse_sizes, default=None,
                        help="timed sizes N:V:D,... (default: CPU 4096:49152:576,4096:151936:576; GPU the grid)")
    parser.add_argument("--memory-sizes", type=_parse_sizes, default=GRID,
                        help="compile-only memory sizes N:V:D,... or none (default: GRID, 2 x 2 x 2 points)")
    parser.add_argument("--memory-only", action="store_true", help="skip timing")
    parser.add_argument("--repeats", type=int, default=1 if not on_gpu else 10,
                        help="timed runs per implementation after one warm-up (min is kept)")
    parser.add_argument("--max-gib", type=float, default=8.0 if not on_gpu else 1e9,
                        help="do not run an implementation whose compiled peak exceeds this (shared CPU hosts)")
    parser.add_argument("--dtype", default="bfloat16" if on_gpu else "float32",
                        help="hidden/unembedding dtype (CPU default float32: XLA:CPU bf16 matmuls are slow)")
    parser.add_argument("--out", default=None, help="also write the markdown tables to this file")
    parser.add_argument("--json", default=None, help="write the goal rows and raw figures here (device suite)")
    args = parser.parse_args(argv)
    dtype = jnp.dtype(args.dtype)
    device = jax.devices()[0]
    device_kind = device.device_kind if on_gpu else _cpu_model()
    header = (f"fused_logprob benchmark, {datetime.date.today()}, backend={jax.default_backend()}, "
              f"device={device_kind}, cpus={os.cpu_count()}, dtype={dtype.name}, jax={jax.__version__}")
    print(header, flush=True)
    mem_rows = memory_table(args.memory_sizes, dtype)
    sizes = args.sizes or (GPU_TIMED if on_gpu else CPU_TIMED)
    time_rows = [] if args.memory_only else time_table(sizes, dtype, args.repeats, args.max_gib)
    text = header + "\n\n" + _markdown(mem_rows, time_rows, dtype, device_kind)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    rows = goal_rows(time_rows)
    high_water = _device_high_water()
    if high_water is not None:
        rows.append(row("device allocator high-water (whole process)", f"{high_water / GIB:.2f} GiB"))
    print_rows(rows)
    write_part(args.json, rows, {"header": header, "memory_rows": mem_rows, "time_rows": time_rows,
                                 "device_peak_bytes_in_use": high_water})
    return 0


if __name__ == "__main__":
    reexec_with_hugepages()  # the same setting as the `rft-jax` commands (rft_jax/hugepages.py)
    raise SystemExit(main())
