"""Decode tokens/s of the product sampler against the HBM-bandwidth bound, on a Qwen2.5-0.5B-shaped model.

    python -m benchmarks.device_decode [--smoke] [--batches 64,256] [--json PATH]

The sampler is timed through `generate_ids` (rft_jax/sampling/generate.py), the one sampling path
of training, evaluation and `rft-jax generate`, by `benchmarks/sampling.py`'s `time_ours`: `batch`
distinct random prompts of P tokens, one sample each, exactly C new tokens (EOS off), weights
random in the sampler's storage dtype (bf16 on a GPU). The sampler's loop runs C decode steps
after the prefill, so a decode step's time is the full run minus the product's `prefill` of the
same prompts (jitted alone: a second compile of the whole sampler per batch, as sampling.py's
prefill-only run needs, would not fit the suite's 8 minutes), over C; tokens/s = batch / step time.

The bound (`decode_step_bytes`): a decode step must read every weight once (the tied embedding
as the unembedding) and each sequence's keys and values, 2*L*J*K values per token of context,
at the mean context of the C steps, P + (C + 1)/2; its time is those bytes over the bandwidth,
both the datasheet's (4.8 TB/s on an H200) and the copy bandwidth measured in this process.
Goal (the issue): at batch 256, at least 50% of the bound's tokens/s.
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.device_env import ceilings, median_seconds
from benchmarks.device_mfu import QWEN25_05B, SMOKE_MODEL
from benchmarks.device_report import print_rows, row, write_part
from benchmarks.sampling import time_ours
from rft_jax.model import ModelConfig, init_params
from rft_jax.model.params import cast
from rft_jax.model.precision import storage_dtype
from rft_jax.model.registry import resolve_compute_dtype
from rft_jax.sampling.generate import batch_bucket, sampler_prompts
from rft_jax.sampling.prefill import prefill


@dataclasses.dataclass(frozen=True)
class Sizes:
    batches: tuple[int, ...]
    P: int  # prompt tokens (a prompt bucket: no padding)
    C: int  # new tokens (a NEW_TOKEN_BUCKETS size: generate_ids runs exactly C steps)
    repeats: int


FULL = Sizes(batches=(64, 256), P=128, C=256, repeats=3)
SMOKE = Sizes(batches=(4, 8), P=16, C=16, repeats=1)


def mean_context(p: int, c: int) -> float:
    """Keys a decode step attends to, on average: step t = 0..C-1 sees P + t + 1 (prompt, earlier tokens, its own)."""
    return p + (c + 1) / 2


def decode_step_bytes(m: ModelConfig, batch: int, context: float, weight_bytes: int, kv_bytes: int) -> dict:
    """The fewest bytes one decode step reads: every weight once (an untied embedding table is only
    gathered, B rows, so it is left out) and `batch` sequences' keys and values over `context` tokens."""
    weights = (m.num_params - (0 if m.tie_embeddings else m.vocab_size * m.hidden_size)) * weight_bytes
    kv = batch * context * 2 * m.num_layers * m.num_kv_heads * m.head_dim * kv_bytes
    return {"weights": weights, "kv": kv, "total": weights + kv}


def sampler_prefill_seconds(params, m: ModelConfig, prompts: list[list[int]], dtype, repeats: int) -> float:
    """Median seconds of the sampler's `prefill` of `prompts`, with the arguments `generate_ids` gives it
    (its rows bucketed as there), jitted alone: the decode step's time is an estimate, the whole sampler's
    time less this prefill's."""
    rest = sampler_prompts(prompts, 0, batch_bucket(len(prompts)))
    run = jax.jit(lambda p, t, mk, sh: prefill(p, m, t, mk, shared_1xS=sh, dtype=dtype, rows=rest.prefill_rows))
    return median_seconds(run, (params, rest.tokens_BxP, rest.mask_BxP, rest.shared_1xS), repeats)


def measure(m: ModelConfig, sizes: Sizes, batch: int, params, dtype) -> dict:
    rng = np.random.default_rng(batch)
    prompts = [list(map(int, rng.integers(1, m.vocab_size, sizes.P))) for _ in range(batch)]
    total_s, compile_s = time_ours(params, m, prompts, sizes.C, dtype, sizes.repeats)
    prefill_s = sampler_prefill_seconds(params, m, prompts, dtype, sizes.repeats)
    # At tiny sizes on a loaded machine the difference can vanish in the noise: then it is not a figure.
    step_s = (total_s - prefill_s) / sizes.C if total_s > 1.05 * prefill_s else float("nan")
    return {"batch": batch, "total_s": total_s, "compile_s": compile_s, "prefill_s": prefill_s, "step_s": step_s,
            "decode_tok_s": batch / step_s, "end_to_end_tok_s": batch * sizes.C / total_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a tiny model and batches (any backend)")
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes (default 64,256; smoke 4,8)")
    parser.add_argument("--json", default=None, help="write the rows and raw figures here")
    args = parser.parse_args(argv)
    m, sizes = (SMOKE_MODEL, SMOKE) if args.smoke else (QWEN25_05B, FULL)
    if args.batches:
        sizes = dataclasses.replace(sizes, batches=tuple(int(b) for b in args.batches.split(",")))
    dtype = jnp.dtype(resolve_compute_dtype("auto"))
    stored = jnp.dtype(storage_dtype(dtype))  # what the sampler reads: weights and caches (float32 on a CPU)
    params = cast(init_params(m, jax.random.key(0), jnp.float32), stored)
    ceil = ceilings(args.smoke)
    context = mean_context(sizes.P, sizes.C)
    print(f"decode: {m.num_params / 1e6:.1f}M params in {stored.name}, compute {dtype.name}, P={sizes.P} "
          f"C={sizes.C}, mean context {context}; bandwidth measured {ceil['bandwidth'] / 1e12:.3g} TB/s", flush=True)
    rows, raw = [], []
    for batch in sizes.batches:
        r = measure(m, sizes, batch, params, dtype)
        need = decode_step_bytes(m, batch, context, stored.itemsize, stored.itemsize)
        bound_measured = batch * ceil["bandwidth"] / need["total"]
        bound_spec = None if ceil["spec_bw"] is None else batch * ceil["spec_bw"] / need["total"]
        r.update(bytes=need, bound_tok_s_measured=bound_measured, bound_tok_s_spec=bound_spec)
        raw.append(r)
        # The goal is judged against the datasheet bound where there is one, else the measured one.
        share = r["decode_tok_s"] / (bound_spec or bound_measured)
        goal = batch == max(sizes.batches)  # nan (decode not resolved) compares False: not met
        rows += [row(f"batch {batch}: decode tok/s (step; prefill; first call)",
                     f"{r['decode_tok_s']:.0f} ({r['step_s'] * 1e3:.2f} ms; {r['prefill_s'] * 1e3:.1f} ms; "
                     f"{r['compile_s']:.0f} s); end to end {r['end_to_end_tok_s']:.0f}"),
                 row(f"batch {batch}: HBM bound tok/s ({need['total'] / 1e9:.3g} GB a step) datasheet / measured",
                     ("n/a" if bound_spec is None else f"{bound_spec:.0f} ({r['decode_tok_s'] / bound_spec:.0%})")
                     + f" / {bound_measured:.0f} ({r['decode_tok_s'] / bound_measured:.0%})",
                     ">= 50% of bound" if goal else "", share >= 0.5 if goal else None)]
        print_rows(rows[-2:])
    write_part(args.json, rows, {"model": dataclasses.asdict(m), "sizes": dataclasses.asdict(sizes),
                                 "storage_dtype": stored.name, "mean_context": context, "ceilings": ceil,
                                 "batches": raw})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
