"""Rollouts on a mesh: the sampler runs once on the step's whole batch, split over the
mesh like the training batch; each process scores only its share of the prompts and
the rewards are gathered, so every process ends with the same `ScoredRollouts`.

Shapes are bucketed exactly as in `rft_jax.sampling.generate_ids`, so the tokens
are the same as unsharded sampling for the same key.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from rft_jax.model.config import ModelConfig
from rft_jax.parallel.distributed import gather_names, gather_rows, process_share
from rft_jax.parallel.rules import batch_shardings, place, replicated
from rft_jax.sampling import SamplingParams
from rft_jax.sampling.generate import batch_bucket, bucket, decode_rollout, left_pad
from rft_jax.sampling.sampler import Rollout, sample
from rft_jax.train.rollout import ScoredRollouts, prompt_ids

NEW_TOKEN_BUCKETS = (16, 32, 64, 128, 256, 512, 1024)  # as generate_ids
STATIC = ("cfg", "params_sampling", "num_samples", "max_new_tokens", "dtype", "eos_ids", "pad_id", "lora_scale",
          "mesh")


@functools.lru_cache(maxsize=8)
def replicated_sampler(mesh: Mesh):
    """`sample` whose outputs are gathered to every device (so every process can read them)."""
    return jax.jit(sample, static_argnames=STATIC, out_shardings=replicated(mesh))


def sample_global(mesh: Mesh, params: dict, cfg: ModelConfig, ids: list[list[int]], key: jax.Array, *,
                  sampling: SamplingParams, num_samples: int, max_new_tokens: int, eos_ids: tuple[int, ...],
                  pad_id: int, lora: dict | None = None, lora_scale: float = 1.0, dtype=jnp.float32,
                  ) -> tuple[Rollout, np.ndarray, np.ndarray]:
    """`generate_ids` on a mesh: prompts split on the batch axes, host numpy results on every process."""
    n = len(ids)
    tokens, mask = left_pad(ids, bucket(max(len(p) for p in ids)), pad_id, batch_bucket(n))
    prompts = place((tokens, mask), batch_shardings((tokens, mask), mesh))
    key = jax.random.wrap_key_data(place(jax.random.key_data(key), replicated(mesh)))
    out = replicated_sampler(mesh)(params, cfg, *prompts, key, params_sampling=sampling, num_samples=num_samples,
                                   max_new_tokens=bucket(max_new_tokens, NEW_TOKEN_BUCKETS), eos_ids=tuple(eos_ids),
                                   pad_id=pad_id, lora=lora, lora_scale=lora_scale, dtype=dtype, mesh=mesh)
    out = Rollout(*(np.asarray(x)[:n] for x in out))
    if out.tokens_BxGxC.shape[2] > max_new_tokens:  # the bucketed budget may exceed what was asked
        over = out.lengths_BxG > max_new_tokens
        cut = lambda x: x[:, :, :max_new_tokens]  # noqa: E731
        out = Rollout(cut(out.tokens_BxGxC), cut(out.logprobs_BxGxC), cut(out.mask_BxGxC),
                      np.minimum(out.lengths_BxG, max_new_tokens), out.stopped_BxG & ~over)
    return out, tokens[:n], mask[:n]


def sample_and_score_sharded(mesh: Mesh, params: dict, cfg: ModelConfig, tokenizer, scorer, examples,
                             key: jax.Array, *, sampling: SamplingParams, num_samples: int, max_new_tokens: int,
                             lora=None, lora_scale: float = 1.0, dtype=jnp.float32, stops: tuple[str, ...] = (),
                             ids: list[list[int]] | None = None) -> ScoredRollouts:
    """`rft_jax.train.rollout.sample_and_score` on a mesh, with each process scoring its share."""
    t0 = time.perf_counter()
    ids = ids if ids is not None else prompt_ids(tokenizer, examples)
    rollout, ptoks, pmask = sample_global(mesh, params, cfg, ids, key, sampling=sampling, num_samples=num_samples,
                                          max_new_tokens=max_new_tokens, eos_ids=tokenizer.eos_ids,
                                          pad_id=tokenizer.pad_id, lora=lora, lora_scale=lora_scale, dtype=dtype)
    completions = decode_rollout(tokenizer, rollout, stops)  # every row: cheap, and logs want the texts
    t1 = time.perf_counter()
    share = process_share(len(examples))
    mine = [(ex, c.text) for ex, row in zip(examples[share], completions[share]) for c in row]
    results = scorer.score_batch([ex for ex, _ in mine], [text for _, text in mine])
    b, g = share.stop - share.start, num_samples
    names = gather_names([k for r in results for k in r.components])
    local = {"rewards": np.array([r.score for r in results], np.float32).reshape(b, g),
             "errors": np.array([r.error is not None for r in results], np.uint8).reshape(b, g),
             "components": {k: np.array([r.components.get(k, np.nan) for r in results], np.float32).reshape(b, g)
                            for k in names}}
    full = gather_rows(local)
    truncated = np.array([[c.finish_reason == "length" for c in row] for row in completions])
    return ScoredRollouts(ptoks, pmask, rollout.tokens_BxGxC, rollout.mask_BxGxC, rollout.logprobs_BxGxC,
                          rollout.lengths_BxG, truncated, [[c.text for c in row] for row in completions],
                          full["rewards"], full["components"], full["errors"].astype(bool),
                          {"generate": t1 - t0, "reward": time.perf_counter() - t1})
