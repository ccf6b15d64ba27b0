"""Sampling throughput: our KV-cached sampler vs transformers `generate`, same process, same machine.

    python benchmarks/sampling.py [--batches 64,8] [--new-tokens 64] [--repeats 2] [--hf-dtypes float32,bfloat16]
                                  [--lora-rank 16]

Both sample at temperature 1.0 (no top-k/top-p), exactly `new_tokens` tokens each (EOS
ignored), from the same chat-templated arithmetic prompts. transformers gets them
left-padded to the longest, as its tokenizer would pad them; ours are timed through
`generate_ids`, the product's sampling path (the shared start once, the rests bucketed).
transformers runs in float32 (its default for this GGUF, the setting of
../shared/PEERS.md) and in bfloat16; torch uses the same number of threads as XLA's
CPU client. Prints new tokens/s for each, the ratios, the matmul peak measured here
in our compute dtype, and the share of it our decode sustains (decode alone: the
full run minus a run that stops after the prefill; 2 FLOPs per parameter per token,
attention not counted). After each row: the same run if it were nothing but its matmuls,
each at the rate this machine reaches for its shape (a ceiling for any implementation
using XLA's CPU matmuls), as tok/s, as a ratio to transformers and as a share of peak.
With `--lora-rank R` (0: off), a last column times the same call with a rank-R adapter on
every projection, as LoRA training samples (adapters kept beside the weights, see
rft_jax/model/decode.py), and its ratio to the plain model's tok/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.matmul_peak import chained_matmul_seconds, matmul_peak_gflops  # noqa: E402
from rft_jax.data.tasks.arithmetic import generate_arithmetic  # noqa: E402
from rft_jax.hugepages import reexec_with_hugepages  # noqa: E402
from rft_jax.model import DEFAULT_MODEL, load_model, resolve_model_path  # noqa: E402
from rft_jax.model.lora import LoraConfig, init_lora  # noqa: E402
from rft_jax.model.registry import resolve_compute_dtype  # noqa: E402
from rft_jax.model.tokenizer import load_tokenizer  # noqa: E402
from rft_jax.sampling import SamplingParams, sample  # noqa: E402
from rft_jax.sampling.generate import generate_ids, sampler_prompts  # noqa: E402


def prompts(tokenizer, n: int) -> list[list[int]]:
    examples = generate_arithmetic(n, seed=123, levels=("one_step", "two_step"))
    return [tokenizer.apply_chat_template(ex.prompt_messages) for ex in examples]


def time_ours(params, cfg, prompts, new_tokens, dtype, repeats, lora=None) -> tuple[float, float]:
    """(median seconds, compile seconds) for sampling `new_tokens` after every prompt once, through
    `generate_ids`, the function training, evaluation and `rft-jax generate` call (EOS off, as for HF)."""
    run = lambda k: generate_ids(params, cfg, prompts, jax.random.key(k), sampling=SamplingParams(1.0),  # noqa: E731
                                 num_samples=1, max_new_tokens=new_tokens, eos_ids=(), pad_id=0, dtype=dtype,
                                 lora=lora, lora_scale=2.0)[0]
    t = time.perf_counter()
    run(0)
    compile_s = time.perf_counter() - t
    times = []
    for r in range(repeats):
        t = time.perf_counter()
        out = run(r + 1)  # host numpy arrays: generate_ids waits for the device
        times.append(time.perf_counter() - t)
    assert int(out.lengths_BxG.min()) == new_tokens
    return statistics.median(times), compile_s


def prefill_seconds(params, cfg, prompts, dtype, repeats) -> float:
    """The same sampler stopped after its first token. `generate_ids` rounds the token budget up to a
    bucket of 16, so this one call goes to the jitted sampler directly with the same prompt arrays."""
    rest = sampler_prompts(prompts, 0, len(prompts))
    run = lambda k: sample(params, cfg, rest.tokens_BxP, rest.mask_BxP, jax.random.key(k),  # noqa: E731
                           params_sampling=SamplingParams(1.0), num_samples=1, max_new_tokens=1, eos_ids=(),
                           pad_id=0, dtype=dtype, shared_1xS=rest.shared_1xS, prefill_rows=rest.prefill_rows)
    jax.block_until_ready(run(0))
    times = []
    for r in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(run(r + 1))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def decode_seconds_per_step(total_s: float, params, cfg, prompts, new_tokens, dtype, repeats) -> tuple[float, float]:
    """(decode seconds per step, prefill seconds): the full run minus a run that stops after the first token."""
    prefill_s = prefill_seconds(params, cfg, prompts, dtype, repeats)
    return max(total_s - prefill_s, 1e-9) / (new_tokens - 1), prefill_s


def matmul_ceiling(cfg, rest, b: int, new_tokens: int, dtype) -> tuple[float, float]:
    """(seconds for the run, seconds per decode step) if it did nothing but its matmuls, each at the rate
    this machine reaches for that shape in a chain of distinct weights (no attention, norms or sampling):
    the best any implementation of this model could do here with XLA's CPU matmuls."""
    d, f, hk = cfg.hidden_size, cfg.intermediate_size, cfg.num_heads * cfg.head_dim
    layer = [(d, hk + 2 * cfg.num_kv_heads * cfg.head_dim), (hk, d), (d, 2 * f), (f, d)]  # q|k|v, o, gate|up, down

    def layers_s(m: int) -> float:
        chain = cfg.num_layers if m <= 512 else 2  # big products are compute-bound: two layers suffice
        return cfg.num_layers * sum(chained_matmul_seconds(m, k, n, dtype, chain) for k, n in layer)

    logits_s = chained_matmul_seconds(b, d, cfg.vocab_size, dtype, 2, weights_nxk=True)
    own_rows = rest.prefill_rows or int(rest.mask_BxP.size)
    shared = 0 if rest.shared_1xS is None else int(rest.shared_1xS.shape[1])
    prefill_s = layers_s(own_rows) + (layers_s(shared) if shared else 0.0) + logits_s
    step_s = layers_s(b) + logits_s
    return prefill_s + (new_tokens - 1) * step_s, step_s


def time_hf(model, prompts, new_tokens, repeats) -> float:
    import torch  # noqa: PLC0415

    width = max(len(p) for p in prompts)
    tokens = np.array([[0] * (width - len(p)) + p for p in prompts])
    mask = np.array([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    ids, att = torch.tensor(tokens, dtype=torch.long), torch.tensor(mask, dtype=torch.long)
    kw = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, use_cache=True, max_new_tokens=new_tokens,
              min_new_tokens=new_tokens, pad_token_id=0)
    with torch.no_grad():
        model.generate(input_ids=ids[:, -8:], attention_mask=att[:, -8:], max_new_tokens=2, do_sample=True, pad_token_id=0)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            out = model.generate(input_ids=ids, attention_mask=att, **kw)
            times.append(time.perf_counter() - t)
    assert out.shape[1] == ids.shape[1] + new_tokens
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="64,8")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-hf", action="store_true", help="skip transformers (no torch installed)")
    parser.add_argument("--hf-dtypes", default="float32,bfloat16", help="transformers runs (float32 = PEERS.md)")
    parser.add_argument("--lora-rank", type=int, default=16, help="also time with an adapter of this rank (0: off)")
    args = parser.parse_args()

    threads = os.cpu_count() or 1
    dtype = jnp.dtype(resolve_compute_dtype("auto"))
    cfg, params = load_model(DEFAULT_MODEL, dtype=dtype)
    tokenizer = load_tokenizer(DEFAULT_MODEL)
    peak = matmul_peak_gflops(dtype)
    lora = None
    if args.lora_rank:  # B != 0, so the adapter changes the output (a fresh one would be B = 0)
        lora = init_lora(cfg, LoraConfig(rank=args.lora_rank, alpha=2.0 * args.lora_rank), jax.random.key(0))
        lora = jax.tree.map(lambda a: a + 0.01 * jax.random.normal(jax.random.key(1), a.shape), lora)
    hf = {}
    if not args.no_hf:
        import torch  # noqa: PLC0415
        import transformers  # noqa: PLC0415

        torch.set_num_threads(threads)
        path = resolve_model_path(DEFAULT_MODEL)
        for name in args.hf_dtypes.split(","):
            hf[name] = transformers.AutoModelForCausalLM.from_pretrained(
                str(path.parent), gguf_file=path.name, dtype=torch.float32).eval().to(getattr(torch, name))
    flop_per_token = 2 * cfg.num_params
    print(f"machine: {threads} threads, matmul peak {peak:.0f} GFLOP/s ({dtype.name}); model {DEFAULT_MODEL}, "
          f"{cfg.num_params / 1e6:.1f}M params, decode {flop_per_token / 1e6:.0f} MFLOP/token; ours in {dtype.name}")
    hf_cols = "".join(f" {'HF ' + n[:4] + ' tok/s':>14} {'ratio':>6}" for n in hf)
    print(f"{'batch':>5} {'ours tok/s':>11}{hf_cols} {'prefill s':>9} {'decode ms/step':>15} "
          f"{'decode GFLOP/s':>15} {'of peak':>8} {'compile s':>9}" + ("  LoRA tok/s  ratio" if lora else ""))
    for b in (int(x) for x in args.batches.split(",")):
        ids = (prompts(tokenizer, b) * 2)[:b]
        ours_s, compile_s = time_ours(params, cfg, ids, args.new_tokens, dtype, args.repeats)
        ours = b * args.new_tokens / ours_s
        hf_row, hf_tps = "", {}
        for name, model in hf.items():
            hf_tps[name] = b * args.new_tokens / time_hf(model, ids, args.new_tokens, args.repeats)
            hf_row += f" {hf_tps[name]:>14.0f} {ours / hf_tps[name]:>6.2f}"
        step_s, prefill_s = decode_seconds_per_step(ours_s, params, cfg, ids, args.new_tokens, dtype, args.repeats)
        gflops = b * flop_per_token / step_s / 1e9
        peak = max(peak, matmul_peak_gflops(dtype))  # the best reading of the run (the machine is shared)
        lora_row = ""
        if lora is not None:
            with_lora = b * args.new_tokens / time_ours(params, cfg, ids, args.new_tokens, dtype, args.repeats, lora)[0]
            lora_row = f"  {with_lora:>10.0f} {with_lora / ours:>6.2f}"
        print(f"{b:>5} {ours:>11.0f}{hf_row} {prefill_s:>9.2f} {step_s * 1e3:>15.0f} {gflops:>15.1f} "
              f"{gflops / peak:>8.0%} {compile_s:>9.1f}{lora_row}   (peak {peak:.0f})", flush=True)
        ceiling_s, ceiling_step_s = matmul_ceiling(cfg, sampler_prompts(ids, 0, b), b, args.new_tokens, dtype)
        ceiling = b * args.new_tokens / ceiling_s
        vs_hf = "".join(f", {ceiling / t:.2f}x HF {n}" for n, t in hf_tps.items())
        print(f"      matmuls alone at this machine's rates for their shapes: {ceiling:.0f} tok/s{vs_hf}; "
              f"decode step {ceiling_step_s * 1e3:.0f} ms = {b * flop_per_token / ceiling_step_s / 1e9 / peak:.0%} "
              f"of peak", flush=True)


if __name__ == "__main__":
    reexec_with_hugepages()  # the same setting as the `rft-jax` commands (rft_jax/hugepages.py)
    main()
