"""Host-side generation: chat prompts in, decoded completions out.

Shapes are bucketed (shared-prefix length, prompt length, batch and new-token
count rounded to a few sizes) so that a training run compiles a handful of
times, not every step. Stop strings are applied here after decoding; EOS ids
stop sequences on device.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rft_jax.model.config import ModelConfig
from rft_jax.sampling.prefill import packed_rows, split_shared_prefix
from rft_jax.sampling.processors import SamplingParams
from rft_jax.sampling.sampler import Rollout, sample

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


def truncate_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def generate_ids(params: dict, cfg: ModelConfig, prompts: list[list[int]], key: jax.Array, *,
                 sampling: SamplingParams, num_samples: int, max_new_tokens: int, eos_ids: tuple[int, ...],
                 pad_id: int, lora: dict | None = None, lora_scale: float = 1.0, dtype=jnp.float32,
                 ) -> tuple[Rollout, np.ndarray, np.ndarray]:
    """Runs the jitted sampler on bucketed shapes; returns the rollout trimmed to len(prompts) rows,
    and the whole prompts left-padded to a bucket (what a training step reads)."""
    rows = batch_bucket(len(prompts))
    tokens, mask = left_pad(prompts, bucket(max(len(p) for p in prompts)), pad_id, rows)
    rest = sampler_prompts(prompts, pad_id, rows)
    out = sample(params, cfg, rest.tokens_BxP, rest.mask_BxP, key, params_sampling=sampling,
                 num_samples=num_samples, max_new_tokens=bucket(max_new_tokens, (16, 32, 64, 128, 256, 512, 1024)),
                 eos_ids=tuple(eos_ids), pad_id=pad_id, lora=lora, lora_scale=lora_scale, dtype=dtype,
                 shared_1xS=rest.shared_1xS, prefill_rows=rest.prefill_rows)
    n = len(prompts)
    out = jax.tree.map(lambda x: np.asarray(x)[:n], out)
    # The bucketed token budget may exceed what was asked: cut back to max_new_tokens.
    if out.tokens_BxGxC.shape[2] > max_new_tokens:
        lengths = np.minimum(out.lengths_BxG, max_new_tokens)
        over = out.lengths_BxG > max_new_tokens
        out = Rollout(out.tokens_BxGxC[:, :, :max_new_tokens], out.logprobs_BxGxC[:, :, :max_new_tokens],
                      out.mask_BxGxC[:, :, :max_new_tokens], lengths, out.stopped_BxG & ~over)
    return out, tokens[:n], mask[:n]


def decode_rollout(tokenizer, rollout: Rollout, stops: tuple[str, ...] = ()) -> list[list[Completion]]:
    """Text of each sample [B][G], the EOS token dropped and stop strings applied."""
    eos = set(tokenizer.eos_ids)
    result = []
    for b in range(rollout.tokens_BxGxC.shape[0]):
        row = []
        for g in range(rollout.tokens_BxGxC.shape[1]):
            n = int(rollout.lengths_BxG[b, g])
            ids = [int(t) for t in rollout.tokens_BxGxC[b, g, :n]]
            lps = [float(x) for x in rollout.logprobs_BxGxC[b, g, :n]]
            text = tokenizer.decode([t for t in ids if t not in eos])
            text, hit = truncate_at_stop(text, stops)
            stopped = bool(rollout.stopped_BxG[b, g]) or hit
            row.append(Completion(text, ids, lps, "stop" if stopped else "length"))
        result.append(row)
    return result
