"""Host-side generation: chat prompts in, decoded completions out.

Shapes are bucketed (shared-prefix length, prompt length, batch and new-token
count rounded to a few sizes) so that a training run compiles a handful of
times, not every step. Stop strings are applied here after decoding; EOS ids
stop sequences on device.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from rft_jax.model.config import ModelConfig
from rft_jax.parallel.mesh import MeshConfig, make_mesh
from rft_jax.parallel.rules import batch_shardings, place, replicated
from rft_jax.sampling.prefill import packed_rows, split_shared_prefix
from rft_jax.sampling.processors import SamplingParams
from rft_jax.sampling.sampler import BudgetForcing, Rollout, sample

PROMPT_BUCKETS = (32, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)


def bucket(n: int, buckets: tuple[int, ...] = PROMPT_BUCKETS) -> int:
    """The smallest bucket that holds n (multiples of the largest bucket beyond it)."""
    for size in buckets:
        if n <= size:
            return size
    top = buckets[-1]
    return -(-n // top) * top


def batch_bucket(n: int) -> int:
    """Batches round up to a power of two (at least 1)."""
    return 1 << max(0, (n - 1).bit_length())


def left_pad(prompts: list[list[int]], length: int, pad_id: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """[rows, length] token and mask arrays; extra rows are copies of the first prompt (discarded later)."""
    tokens = np.full((rows, length), pad_id, np.int32)
    mask = np.zeros((rows, length), bool)
    for i in range(rows):
        ids = prompts[i] if i < len(prompts) else prompts[0]
        if len(ids) > length:
            raise ValueError(f"prompt {i} has {len(ids)} tokens, more than the bucket {length}")
        tokens[i, length - len(ids):] = ids
        mask[i, length - len(ids):] = True
    return tokens, mask


class SamplerPrompts(NamedTuple):
    """`sample`'s prompt arguments."""

    tokens_BxP: jax.Array  # each prompt's rest, left-padded to its bucket
    mask_BxP: jax.Array
    shared_1xS: jax.Array | None  # the start every prompt shares, run once (None: none worth sharing)
    prefill_rows: int | None  # rows the rests' prefill is packed into (None: not packed)


def sampler_prompts(prompts: list[list[int]], pad_id: int, rows: int) -> SamplerPrompts:
    """Splits off the shared start, buckets the rests and sizes their packed prefill."""
    s = split_shared_prefix(prompts) if len(prompts) > 1 else 0
    rest = [p[s:] for p in prompts]
    rest_tokens, rest_mask = left_pad(rest, bucket(max(len(p) for p in rest)), pad_id, rows)
    shared = jnp.asarray([prompts[0][:s]], jnp.int32) if s else None
    prefill_rows = packed_rows(int(rest_mask.sum()), rest_mask.size) if s else None
    return SamplerPrompts(jnp.asarray(rest_tokens), jnp.asarray(rest_mask), shared, prefill_rows)


@dataclasses.dataclass
class Completion:
    """One decoded sample."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" or "length"
    forced: list[bool] = dataclasses.field(default_factory=list)  # per token: written by budget forcing


def truncate_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


NEW_TOKEN_BUCKETS = (16, 32, 64, 128, 256, 512, 1024)  # then multiples of 1024
STATIC = ("cfg", "params_sampling", "num_samples", "max_new_tokens", "dtype", "eos_ids", "pad_id", "lora_scale",
          "mesh", "prefill_rows", "forcing")


def local_mesh() -> Mesh:
    """The unsharded case: a mesh of this process's first device."""
    return make_mesh(MeshConfig(1, 1, 1), devices=jax.local_devices()[:1])


def mesh_of(params) -> Mesh:
    """The mesh the parameters live on (a one-device mesh for unsharded or host arrays)."""
    sharding = getattr(jax.tree.leaves(params)[0], "sharding", None)
    return sharding.mesh if isinstance(sharding, NamedSharding) else local_mesh()


@functools.lru_cache(maxsize=8)
def mesh_sampler(mesh: Mesh):
    """`sample` with its outputs gathered to every device of `mesh`, so every process can read them."""
    return jax.jit(sample, static_argnames=STATIC, out_shardings=replicated(mesh))


def generate_ids(params: dict, cfg: ModelConfig, prompts: list[list[int]], key: jax.Array, *,
                 sampling: SamplingParams, num_samples: int, max_new_tokens: int, eos_ids: tuple[int, ...],
                 pad_id: int, lora: dict | None = None, lora_scale: float = 1.0, dtype=jnp.float32,
                 mesh: Mesh | None = None, forcing: BudgetForcing | None = None
                 ) -> tuple[Rollout, np.ndarray, np.ndarray]:
    """The one sampling path (training, evaluation, warm start, judges, `rft-jax generate`).

    Runs the jitted sampler on bucketed shapes, with the shared chat-template
    start run once and, for large batches, the prefill packed; on `mesh` the
    prompts are split over the batch axes and the KV caches follow the
    sharding table. Returns host numpy arrays, on every
    process: the rollout trimmed to len(prompts) rows and the whole prompts
    left-padded to a bucket (what a training step reads). `mesh` None: the
    mesh the parameters are sharded on, else this process's first device.
    `forcing`: reasoning mode's think budget, enforced in the loop.
    """
    mesh = mesh_of(params) if mesh is None else mesh
    n = len(prompts)
    rows = batch_bucket(n)
    tokens, mask = left_pad(prompts, bucket(max(len(p) for p in prompts)), pad_id, rows)
    rest = sampler_prompts(prompts, pad_id, rows)
    rest_tokens, rest_mask = place((rest.tokens_BxP, rest.mask_BxP),
                                   batch_shardings((rest.tokens_BxP, rest.mask_BxP), mesh))
    shared = None if rest.shared_1xS is None else place(rest.shared_1xS, replicated(mesh))
    key = jax.random.wrap_key_data(place(jax.random.key_data(key), replicated(mesh)))
    out = mesh_sampler(mesh)(params, cfg, rest_tokens, rest_mask, key, params_sampling=sampling,
                             num_samples=num_samples, max_new_tokens=bucket(max_new_tokens, NEW_TOKEN_BUCKETS),
                             eos_ids=tuple(eos_ids), pad_id=pad_id, lora=lora, lora_scale=lora_scale, dtype=dtype,
                             mesh=mesh, shared_1xS=shared, prefill_rows=rest.prefill_rows, forcing=forcing)
    out = Rollout(*(np.asarray(x)[:n] for x in out))
    # The bucketed token budget may exceed what was asked: cut back to max_new_tokens.
    if out.tokens_BxGxC.shape[2] > max_new_tokens:
        lengths = np.minimum(out.lengths_BxG, max_new_tokens)
        over = out.lengths_BxG > max_new_tokens
        out = Rollout(out.tokens_BxGxC[:, :, :max_new_tokens], out.logprobs_BxGxC[:, :, :max_new_tokens],
                      out.mask_BxGxC[:, :, :max_new_tokens], lengths, out.stopped_BxG & ~over,
                      out.forced_BxGxC[:, :, :max_new_tokens])
    return out, tokens[:n], mask[:n]


def stop_token_count(tokenizer, ids: list[int], stops: tuple[str, ...], eos: set[int]) -> int:
    """How many of `ids` a completion whose text holds a stop string keeps: through the first token whose
    decoded prefix contains one. A binary search, since a longer prefix keeps what a shorter one holds:
    O(log n) decodes per completion."""
    contains = lambda k: any(s in tokenizer.decode([t for t in ids[:k] if t not in eos]) for s in stops)  # noqa: E731
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if contains(mid) else (mid + 1, hi)
    return lo


def decode_rollout(tokenizer, rollout: Rollout, stops: tuple[str, ...] = ()) -> list[list[Completion]]:
    """Text of each sample [B][G], the EOS token dropped and stop strings applied.

    A stop string ends the completion at the token that completes it: the tokens
    and log-probs after it are dropped (so an episode built from them trains on
    none of them) and the text is cut before the stop string. The finish reason
    is "stop" for an EOS or a stop string (even when the budget ran out after
    it), "length" only when the budget ran out with neither.
    """
    eos = set(tokenizer.eos_ids)
    result = []
    for b in range(rollout.tokens_BxGxC.shape[0]):
        row = []
        for g in range(rollout.tokens_BxGxC.shape[1]):
            n = int(rollout.lengths_BxG[b, g])
            ids = [int(t) for t in rollout.tokens_BxGxC[b, g, :n]]
            lps = [float(x) for x in rollout.logprobs_BxGxC[b, g, :n]]
            forced = [bool(x) for x in rollout.forced_BxGxC[b, g, :n]]
            text, hit = truncate_at_stop(tokenizer.decode([t for t in ids if t not in eos]), stops)
            if hit:  # the tokens after the stop string go too: no episode trains on them
                keep = stop_token_count(tokenizer, ids, stops, eos)
                ids, lps, forced = ids[:keep], lps[:keep], forced[:keep]
            stopped = bool(rollout.stopped_BxG[b, g]) or hit
            row.append(Completion(text, ids, lps, "stop" if stopped else "length", forced))
        result.append(row)
    return result
