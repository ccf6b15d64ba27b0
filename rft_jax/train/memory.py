"""Will a run fit? The bytes its sampler and its training step need, against the device's memory.

Memory, not a fixed cap, bounds the generation length: the sampler keeps every
layer's keys and values of B*G completions of C tokens (`empty_decode_cache`),
and the training step keeps each layer's activations of a micro-batch for the
backward pass. The two never run at once, so a run needs its weights plus the
larger of the two. These are estimates calibrated on XLA's memory analysis of
the compiled step (docs/reasoning.md, "Long generations"), not measurements:
a run is refused only when the estimate is over the limit.
"""

from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rft_jax.model.config import ModelConfig
from rft_jax.model.registry import resolve_compute_dtype
from rft_jax.model.transformer import attention_query_block
from rft_jax.parallel.mesh import mesh_shape
from rft_jax.sampling.generate import NEW_TOKEN_BUCKETS, batch_bucket, bucket
from rft_jax.train.config import TrainConfig

LOGPROB_VOCAB_TILE = 4096  # kernels/fused_logprob's xla_chunked block: [N, 4096] float32 tiles off the GPU


@dataclasses.dataclass(frozen=True)
class RunShape:
    """What sizes a run's memory: the paper symbols B, G, P, C and the training step's settings."""

    batch_size: int  # B prompts per step
    samples_per_prompt: int  # G
    max_prompt_tokens: int  # P
    max_new_tokens: int  # C
    microbatches: int = 1  # ppo_minibatches x grad_accum_steps: the step sees B / this prompts at once
    remat: bool = False
    full_finetune: bool = False  # else LoRA (adapters and their optimizer state are negligible)
    reference_copy: bool = False  # full fine-tuning keeps a float32 copy of the starting weights


class MemoryEstimate(NamedTuple):
    """Bytes of one run on all its devices together (weights once per data-parallel replica)."""

    weights: int  # parameters, their compute-dtype copy, and with full fine-tuning gradients and Adam moments
    prefix_kv: int  # the sampler's prompt keys/values [L, B, P, J, K], as prefilled and in the decode layout
    branch_cache: int  # the sampler's branch cache [L, B, G, C, J, K] in the storage dtype
    sampler_other: int  # the rollout's token buffers, a step's logits and the prefill's scores
    activations: int  # the training step's largest live activations for one micro-batch

    @property
    def sampler(self) -> int:
        return self.prefix_kv + self.branch_cache + self.sampler_other

    @property
    def total(self) -> int:
        return self.weights + max(self.sampler, self.activations)


def layer_activation_bytes(m: ModelConfig) -> int:
    """Bytes a layer keeps per token for its backward pass, float32: the residual stream and norms (6D),
    queries and the attention output (2HK), keys and values before and after rotation (4JK), the MLP (4F).
    46.1 KB for SmolLM2-135M; XLA's analysis of its compiled step on a CPU gave 45.7 KB."""
    hk, jk = m.num_heads * m.head_dim, m.num_kv_heads * m.head_dim
    # A mixture of experts runs every token through every expert (rft_jax/model/moe.py): E expert MLPs' worth.
    mlp = m.num_experts * m.moe_intermediate_size + m.num_experts if m.num_experts else m.intermediate_size
    return 4 * (6 * m.hidden_size + 2 * hk + 4 * jk + 4 * mlp)


def activation_bytes(m: ModelConfig, run: RunShape, backend: str) -> int:
    """The training step's peak for one micro-batch of n tokens: what the backward pass keeps (every layer's
    activations, or with remat each layer's input [n, D]; the final hidden states) and the largest
    transient on top of it: one layer recomputed with the attention's live scores (4 [rows, H, block,
    P + C] float32 arrays: scores, weights and their gradients), or the log-prob kernel's [n, 4096] tiles.
    Without remat and with one query block (C <= LONG_COMPLETION) each layer also keeps one [C, P + C]
    score array. Against XLA's analysis of the compiled SmolLM2-135M step on a CPU (C = 1k to 16k): 0-20%
    above it in float32, up to 40% with bf16 matmuls."""
    rows = run.batch_size // run.microbatches * run.samples_per_prompt  # completions in one micro-batch
    p, c = run.max_prompt_tokens, run.max_new_tokens
    n, per_token = rows * c, layer_activation_bytes(m)
    block = attention_query_block(rows, 1, m.num_heads, p, c - 1)  # the branch: every token but the last
    scores = 4 * rows * m.num_heads * (block or c) * (p + c)
    kept = n * (4 * m.num_layers * m.hidden_size if run.remat else m.num_layers * per_token) + 12 * n * m.hidden_size
    if block is None and not run.remat:
        kept += m.num_layers * scores
    layer = (n * per_token if run.remat else 0) + 4 * scores
    head = 0 if backend == "gpu" else 12 * n * LOGPROB_VOCAB_TILE  # the Pallas kernel's tiles are small
    return kept + max(layer, head)


def estimate_memory(m: ModelConfig, run: RunShape, *, compute_dtype: str, backend: str) -> MemoryEstimate:
    """Bytes of a run of `m` shaped `run`, with matmuls in `compute_dtype` on `backend` ("cpu", "gpu", "tpu").

    Caches and copies written piecewise are float32 on a CPU (`precision.storage_dtype`), else in the
    compute dtype. The sampler runs the batch rounded to a power of two and C to its bucket (`generate_ids`).
    """
    cb = jnp.dtype(compute_dtype).itemsize
    sb = 4 if backend == "cpu" else cb
    n_params, lkj = m.num_params, m.num_layers * m.num_kv_heads * m.head_dim
    if run.full_finetune:  # params, gradients, two Adam moments (float32), the reference, the sampler's copy
        weights = n_params * (4 * (4 + run.reference_copy) + cb)
    else:  # float32 params and the frozen base in the storage dtype
        weights = n_params * (4 + sb)
    b, g = batch_bucket(run.batch_size), run.samples_per_prompt
    p, c = bucket(run.max_prompt_tokens), bucket(run.max_new_tokens, NEW_TOKEN_BUCKETS)
    prefix_kv = 2 * lkj * b * p * (sb + cb)
    branch_cache = 2 * lkj * b * g * c * sb
    sampler_other = b * g * (10 * c + 12 * m.vocab_size) + 8 * b * m.num_heads * p * p
    activations = activation_bytes(m, run, backend)
    return MemoryEstimate(weights, prefix_kv, branch_cache, sampler_other, activations)


def run_shape(cfg: TrainConfig) -> RunShape:
    """The `RunShape` of a training config."""
    reference = cfg.mode == "full" and (cfg.loss.beta != 0 or cfg.kl_monitor_interval > 0)
    return RunShape(cfg.batch_size, cfg.sampling.samples_per_prompt, cfg.data.max_prompt_tokens,
                    cfg.sampling.max_new_tokens, cfg.ppo_minibatches * cfg.optimizer.grad_accum_steps,
                    cfg.model.remat, cfg.mode == "full", reference)


def available_ram() -> int:
    """Bytes of host memory available now (MemAvailable counts reclaimable page cache; free pages do not)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def device_memory() -> tuple[int | None, int]:
    """(bytes, devices sharing them): an accelerator's own memory limit, or on a CPU the host's available
    RAM, which all local (fake) devices share. None when the backend reports no limit."""
    device = jax.local_devices()[0]
    stats = device.memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"]), 1
    if device.platform == "cpu":
        return available_ram(), jax.local_device_count()
    return None, 1


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def memory_problem(cfg: TrainConfig, model_cfg: ModelConfig, limit: int | None = None,
                   sharing: int = 1) -> str | None:
    """Why `cfg` cannot fit in memory (what was asked, the estimate, the limit, what to lower), or None when
    it can. The estimate is split over the mesh: weights over fsdp x tensor, the batch over every device.
    `limit`: bytes of one memory pool, which `sharing` devices share (default: `device_memory()`)."""
    if limit is None:
        limit, sharing = device_memory()
        if limit is None:
            return None
    devices = jax.device_count()
    try:
        data = mesh_shape(cfg.mesh, devices)[0]
    except ValueError:  # reported where the mesh is built
        data = 1
    est = estimate_memory(model_cfg, run_shape(cfg), compute_dtype=resolve_compute_dtype(cfg.model.compute_dtype),
                          backend=jax.default_backend())
    weights = est.weights * data / devices * sharing
    need = weights + max(est.sampler, est.activations) / devices * sharing
    if need <= limit:
        return None
    fixes = ["lower batch_size, sampling.samples_per_prompt or sampling.max_new_tokens"]
    if est.sampler >= est.activations:
        what = (f"the sampler's caches ({gib(est.branch_cache)} of branch keys/values [L, B, G, C, J, K] and "
                f"{gib(est.prefix_kv)} of prompt keys/values)")
    else:
        what = f"the training step's activations ({gib(est.activations)} for one micro-batch)"
        shape = run_shape(cfg)
        if shape.batch_size // shape.microbatches > 1:  # a micro-batch holds whole groups
            fixes.insert(0, "raise optimizer.grad_accum_steps (fewer groups per micro-batch)")
        if not shape.remat:
            fixes.insert(0, "set model.remat")
    fix = "; ".join(fixes)
    pool = "per device" if sharing == 1 else f"of host memory ({sharing} CPU devices share it)"
    return (f"batch_size={cfg.batch_size} x samples_per_prompt={cfg.sampling.samples_per_prompt} completions of "
            f"up to max_new_tokens={cfg.sampling.max_new_tokens} need about {gib(need)} {pool}, mostly "
            f"{what}, besides {gib(weights)} of weights, but {gib(limit)} is available: {fix}")
