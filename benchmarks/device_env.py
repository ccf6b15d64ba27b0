"""The device suite's first part: what the machine is, and its two ceilings measured in this run.

    python -m benchmarks.device_env [--smoke] [--json PATH]

Prints the JAX version, backend and devices (with their memory), checks that every package
rft_jax imports at runtime is importable (on the GPU machine the missing ones come from the
suite's wheels), and measures the ceilings the other parts are put against (METHOD.md: measure
them on the machine rather than trust the datasheet):
- matmul: an n x n x n bf16 product on random data (float32 accumulation), median of repeats;
- memory bandwidth: a large elementwise copy `x + 1`, counting the bytes read plus those written.
`SPEC` holds the datasheet figures, used beside the measured ones, never instead of them.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from benchmarks.device_report import print_rows, row, write_part
from benchmarks.kernels import GPU_PEAKS as SPEC  # datasheet dense bf16 FLOP/s and HBM bytes/s by device_kind

# Imported by rft_jax at runtime and absent from the H200 image (KINDS.md): the suite's wheels bring them.
RUNTIME_IMPORTS = ("tyro", "gguf", "jsonschema", "tensorboardX", "starlette", "uvicorn", "rft_jax.train.trainer",
                   "rft_jax.serving.server")
FULL = {"matmul_n": 8192, "copy_bytes": 2 << 30, "repeats": 20}
SMOKE = {"matmul_n": 256, "copy_bytes": 16 << 20, "repeats": 3}


def spec_peaks() -> tuple[float | None, float | None]:
    """(FLOP/s, bytes/s) from the datasheet of this device, or (None, None) where none is known (a CPU)."""
    kind = jax.devices()[0].device_kind
    return next((p for key, p in SPEC.items() if key in kind), (None, None))


def median_seconds(f, args: tuple, repeats: int) -> float:
    """Median wall time of `repeats` calls of a jitted `f` after one that compiles it (device work waited for)."""
    jax.block_until_ready(f(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_flops(n: int, repeats: int) -> float:
    """FLOP/s of an n^3 bf16 matmul on random data (zeros run faster than real data: METHOD.md)."""
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.bfloat16)
    b = jax.random.normal(kb, (n, n), jnp.bfloat16)
    f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    return 2 * n**3 / median_seconds(f, (a, b), repeats)


def copy_bandwidth(nbytes: int, repeats: int) -> float:
    """Bytes/s of `x + 1` over a bf16 array of `nbytes`, counting read and write (2 x nbytes a call)."""
    x = jax.random.normal(jax.random.key(1), (nbytes // 2,), jnp.bfloat16)
    return 2 * nbytes / median_seconds(jax.jit(lambda x: x + 1), (x,), repeats)


def ceilings(smoke: bool) -> dict:
    """Measured and datasheet ceilings of this device: {'matmul_flops', 'bandwidth', 'spec_flops', 'spec_bw'}."""
    sizes = SMOKE if smoke else FULL
    spec_flops, spec_bw = spec_peaks()
    return {"matmul_flops": matmul_flops(sizes["matmul_n"], sizes["repeats"]),
            "bandwidth": copy_bandwidth(sizes["copy_bytes"], sizes["repeats"]),
            "spec_flops": spec_flops, "spec_bw": spec_bw, "sizes": sizes}


def version_drift(requirements: Path = Path(__file__).resolve().parents[1] / "requirements.txt") -> dict[str, str]:
    """Packages whose installed version is not requirements.txt's pin: the GPU image brings its own (JAX
    0.11.2 there against 0.10.2 in CI), so a failure there may be a version's, not the code's."""
    drift = {}
    for line in requirements.read_text().splitlines():
        if "==" not in line or line.lstrip().startswith("#"):
            continue
        name, pinned = (x.strip() for x in line.split("==", 1))
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = "missing"
        if installed != pinned:
            drift[name] = f"{installed} (pinned {pinned})"
    return drift


def environment() -> dict:
    devices = jax.devices()
    stats = devices[0].memory_stats() or {}
    imports = {}
    for name in RUNTIME_IMPORTS:
        try:
            module = importlib.import_module(name)
            imports[name] = getattr(module, "__version__", "ok")
        except Exception as err:  # noqa: BLE001 - reported, and the part fails below
            imports[name] = f"FAILED: {type(err).__name__}: {err}"
    return {"jax": jax.__version__, "python": platform.python_version(), "backend": jax.default_backend(),
            "devices": [f"{d.platform}:{d.id} {d.device_kind}" for d in devices],
            "device_memory_bytes": stats.get("bytes_limit"), "imports": imports, "version_drift": version_drift()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (any backend)")
    parser.add_argument("--json", default=None, help="write the rows and raw figures here")
    args = parser.parse_args(argv)
    env = environment()
    for key, value in env.items():
        print(f"{key}: {value}", flush=True)
    ceil = ceilings(args.smoke)
    spec = "n/a" if ceil["spec_flops"] is None else f"{ceil['spec_flops'] / 1e12:.0f} / {ceil['spec_bw'] / 1e12:.2f}"
    failed = [name for name, v in env["imports"].items() if str(v).startswith("FAILED")]
    rows = [row("device", f"{env['devices'][0]} x{len(env['devices'])}, jax {env['jax']}, python {env['python']}"),
            row("runtime imports", "all ok" if not failed else "missing: " + ", ".join(failed), "all ok", not failed),
            row("versions other than requirements.txt's", ", ".join(f"{k} {v}" for k, v in env["version_drift"].items())
                or "none"),
            row("matmul ceiling (bf16, measured)", f"{ceil['matmul_flops'] / 1e12:.3g} TFLOP/s"),
            row("copy bandwidth (read + write, measured)", f"{ceil['bandwidth'] / 1e12:.3g} TB/s"),
            row("datasheet TFLOP/s / TB/s", spec)]
    on_gpu = env["backend"] == "gpu"
    if not args.smoke:  # full sizes on a CPU fallback would only run out of time, part after part
        rows.insert(1, row("backend", env["backend"], "gpu", on_gpu))
    print_rows(rows)
    write_part(args.json, rows, {**env, **ceil})
    return 1 if failed or not (on_gpu or args.smoke) else 0


if __name__ == "__main__":
    raise SystemExit(main())
