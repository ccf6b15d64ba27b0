"""The KV-cached sampler on a tiny random model: cache correctness, stopping, filters, the draw itself."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rft_jax.model import ModelConfig, init_params, logits, sequence_forward
from rft_jax.model.lora import LoraConfig, init_lora, merge_lora
from rft_jax.sampling import SamplingParams, sample
from rft_jax.sampling.generate import generate_ids, left_pad, sampler_prompts
from rft_jax.sampling.prefill import packed_rows, prefill, split_shared_prefix
from rft_jax.sampling.processors import inverse_cdf_sample, sampling_logprobs

TINY = ModelConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                   head_dim=8)
PARAMS = init_params(TINY, jax.random.key(0), std=0.3)


def _prompts():
    """Two left-padded prompts of different lengths."""
    tokens = np.zeros((2, 8), np.int32)
    mask = np.zeros((2, 8), bool)
    tokens[0, 3:], mask[0, 3:] = [5, 17, 42, 9, 250], True
    tokens[1, :], mask[1, :] = [7, 8, 9, 10, 11, 12, 13, 14], True
    return jnp.asarray(tokens), jnp.asarray(mask)


def _sample(key=0, params=PARAMS, **kw):
    tokens, mask = _prompts()
    args = dict(params_sampling=SamplingParams(1.0), num_samples=3, max_new_tokens=12, eos_ids=(), pad_id=0) | kw
    return sample(params, TINY, tokens, mask, jax.random.key(key), **args)


@jax.jit
def _forward_logprobs(params, seq, mask):
    return jax.nn.log_softmax(logits(params, TINY, sequence_forward(params, TINY, seq, mask)[0]), -1)


def _next_token_logprobs(params, prompt, pmask, completion):
    """[C, V] log-probs of each completion position given everything before it, from one full forward."""
    seq = np.concatenate([prompt, completion])[None]
    mask = np.concatenate([pmask, np.ones(len(completion), bool)])[None]
    logp = np.asarray(_forward_logprobs(params, jnp.asarray(seq), jnp.asarray(mask))[0])
    return logp[len(prompt) - 1:len(prompt) - 1 + len(completion)]


def _full_forward_logprobs(params, prompt, pmask, completion):
    return _next_token_logprobs(params, prompt, pmask, completion)[np.arange(len(completion)), completion]


@pytest.mark.parametrize("num_samples", [1, 3])
def test_cached_logprobs_equal_full_forward(num_samples):
    """Every recorded log-prob equals a fresh forward over prompt + completion (G = 1 and G > 1)."""
    out = _sample(num_samples=num_samples)
    tokens, mask = map(np.asarray, _prompts())
    for b in range(2):
        for g in range(num_samples):
            completion = np.asarray(out.tokens_BxGxC[b, g])
            expected = _full_forward_logprobs(PARAMS, tokens[b], mask[b], completion)
            np.testing.assert_allclose(np.asarray(out.logprobs_BxGxC[b, g]), expected, atol=1e-5)


@pytest.mark.parametrize("variant", [dict(tie_embeddings=False), dict(qkv_bias=True), dict(qk_norm=True)])
def test_cached_logprobs_equal_full_forward_for_each_architecture(variant):
    """Untied head, Qwen2's q/k/v bias and Qwen3's q/k norm go through the fused decode weights too."""
    cfg = dataclasses.replace(TINY, **variant)
    params = init_params(cfg, jax.random.key(1), std=0.3)
    tokens, mask = _prompts()
    out = sample(params, cfg, tokens, mask, jax.random.key(2), params_sampling=SamplingParams(1.0), num_samples=2,
                 max_new_tokens=10, eos_ids=(), pad_id=0)
    fwd = jax.jit(lambda seq, m: jax.nn.log_softmax(logits(params, cfg, sequence_forward(params, cfg, seq, m)[0]), -1))
    for b in range(2):
        for g in range(2):
            completion = np.asarray(out.tokens_BxGxC[b, g])
            seq = np.concatenate([np.asarray(tokens[b]), completion])[None]
            m = np.concatenate([np.asarray(mask[b]), np.ones(10, bool)])[None]
            logp = np.asarray(fwd(jnp.asarray(seq), jnp.asarray(m))[0])[7:17]
            np.testing.assert_allclose(np.asarray(out.logprobs_BxGxC[b, g]), logp[np.arange(10), completion], atol=1e-5)


def test_shared_prefix_is_found_rounded_and_leaves_every_prompt_a_token():
    common = list(range(100, 140))  # 40 shared tokens
    assert split_shared_prefix([common + [1, 2], common + [3]]) == 32
    assert split_shared_prefix([common + [1, 2], common + [3]], multiple=8) == 40
    assert split_shared_prefix([common, common + [5]], multiple=1) == 39  # the shorter keeps its last token
    assert split_shared_prefix([[1, 2, 3], [4, 2, 3]], multiple=1) == 0


@pytest.mark.parametrize("num_samples", [1, 3])
def test_shared_prefix_prefill_samples_what_whole_prompts_sample(num_samples):
    """Prompts that share 37 tokens: the shared part is run once (generate_ids does this), and the
    recorded log-probs still equal a full forward over each whole prompt + completion."""
    rng = np.random.default_rng(0)
    common = list(rng.integers(3, 300, 37))
    prompts = [common + list(rng.integers(3, 300, n)) for n in (3, 11, 6)]
    assert split_shared_prefix(prompts) == 32
    out, ptoks, pmask = generate_ids(PARAMS, TINY, prompts, jax.random.key(7), sampling=SamplingParams(1.0),
                                     num_samples=num_samples, max_new_tokens=9, eos_ids=(), pad_id=0)
    for b in range(3):
        for g in range(num_samples):
            completion = np.asarray(out.tokens_BxGxC[b, g])
            expected = _full_forward_logprobs(PARAMS, ptoks[b], pmask[b], completion)
            np.testing.assert_allclose(np.asarray(out.logprobs_BxGxC[b, g]), expected, atol=1e-5)
    greedy, _, _ = generate_ids(PARAMS, TINY, prompts, jax.random.key(7), sampling=SamplingParams(0.0),
                                num_samples=1, max_new_tokens=9, eos_ids=(), pad_id=0)
    for b in range(3):
        alone, _, _ = generate_ids(PARAMS, TINY, [prompts[b]], jax.random.key(7), sampling=SamplingParams(0.0),
                                   num_samples=1, max_new_tokens=9, eos_ids=(), pad_id=0)
        np.testing.assert_array_equal(greedy.tokens_BxGxC[b], alone.tokens_BxGxC[0])


def test_same_key_same_tokens_and_samples_differ_within_a_group():
    a, b, c = _sample(1), _sample(1), _sample(2)
    np.testing.assert_array_equal(np.asarray(a.tokens_BxGxC), np.asarray(b.tokens_BxGxC))
    assert not np.array_equal(np.asarray(a.tokens_BxGxC), np.asarray(c.tokens_BxGxC))
    assert not np.array_equal(np.asarray(a.tokens_BxGxC[:, 0]), np.asarray(a.tokens_BxGxC[:, 1]))


def test_eos_stops_each_sequence_and_pads_after_it():
    eos = 7
    out = _sample(3, max_new_tokens=40, eos_ids=(eos,), pad_id=0,
                  params_sampling=SamplingParams(1.0, top_k=20))  # a small support, so EOS is likely
    tokens, lengths = np.asarray(out.tokens_BxGxC), np.asarray(out.lengths_BxG)
    stopped, mask = np.asarray(out.stopped_BxG), np.asarray(out.mask_BxGxC)
    for b in range(2):
        for g in range(3):
            n = lengths[b, g]
            assert list(mask[b, g]) == [True] * n + [False] * (40 - n)
            assert (tokens[b, g, n:] == 0).all()
            if stopped[b, g]:
                assert tokens[b, g, n - 1] == eos and eos not in tokens[b, g, :n - 1]
            else:
                assert n == 40 and eos not in tokens[b, g]


def test_greedy_is_argmax_of_the_full_forward():
    out = _sample(params_sampling=SamplingParams(0.0), num_samples=2)
    tokens, mask = map(np.asarray, _prompts())
    got = np.asarray(out.tokens_BxGxC)
    np.testing.assert_array_equal(got[:, 0], got[:, 1])
    for b in range(2):
        logp = _next_token_logprobs(PARAMS, tokens[b], mask[b], got[b, 0])
        np.testing.assert_array_equal(got[b, 0], logp.argmax(-1))


def test_sampling_with_lora_equals_sampling_the_merged_model():
    lcfg = LoraConfig(rank=4, alpha=8.0)
    lora = init_lora(TINY, lcfg, jax.random.key(1))
    lora = jax.tree.map(lambda a: a + 0.2 * jax.random.normal(jax.random.key(2), a.shape), lora)
    scale = lcfg.alpha / lcfg.rank
    merged = merge_lora(PARAMS, lora, scale)
    greedy = SamplingParams(0.0)
    with_adapter = _sample(params_sampling=greedy, lora=lora, lora_scale=scale)
    on_merged = _sample(params_sampling=greedy, params=merged)
    np.testing.assert_array_equal(np.asarray(with_adapter.tokens_BxGxC), np.asarray(on_merged.tokens_BxGxC))
    np.testing.assert_allclose(np.asarray(with_adapter.logprobs_BxGxC), np.asarray(on_merged.logprobs_BxGxC),
                               atol=1e-4)


def test_filtered_tokens_are_never_sampled():
    out = _sample(5, params_sampling=SamplingParams(1.0, top_k=3), max_new_tokens=8)
    tokens, mask = map(np.asarray, _prompts())
    for b in range(2):
        for g in range(3):
            completion = np.asarray(out.tokens_BxGxC[b, g])
            top3 = np.argsort(-_next_token_logprobs(PARAMS, tokens[b], mask[b], completion), -1)[:, :3]
            assert all(t in row for t, row in zip(completion, top3))


@pytest.mark.parametrize("filters", [dict(), dict(top_p=0.8), dict(top_k=40), dict(min_p=0.05)])
def test_inverse_cdf_draw_matches_the_distribution(filters):
    """200k draws over a 700-token vocabulary (not a multiple of the 256 block): frequencies within 5 sigma."""
    raw = jax.random.normal(jax.random.key(3), (1, 700)) * 2.0
    logp = sampling_logprobs(raw, SamplingParams(1.0, **filters))
    n = 200_000
    draws = jax.jit(jax.vmap(lambda k: inverse_cdf_sample(k, logp)[0]))(jax.random.split(jax.random.key(4), n))
    freq = np.bincount(np.asarray(draws), minlength=700) / n
    p = np.exp(np.asarray(logp[0], np.float64))
    sigma = np.sqrt(p * (1 - p) / n) + 1e-6
    assert np.all(np.abs(freq - p) <= 5 * sigma + 1e-5)
    assert freq[p < 1e-12].sum() == 0  # filtered tokens never appear


def test_packed_prefill_equals_the_padded_one():
    """The prompts' own parts packed into fewer rows (projections and MLP on real tokens only) give the
    padded prefill's last hidden states and keys/values, in float32 to rounding (matmuls of other shapes sum in
    other orders: 1.2e-5 at XLA's optimisation level 0, which the suite compiles at, under 1e-5 at level 2)."""
    rng = np.random.default_rng(1)
    rests = [list(rng.integers(3, 300, n)) for n in (3, 11, 6, 1)]
    tokens, mask = left_pad(rests, 16, 0, 4)
    shared = jnp.asarray([list(rng.integers(3, 300, 8))], jnp.int32)
    padded = prefill(PARAMS, TINY, tokens, mask, shared_1xS=shared)
    for rows in (21, 32):  # exactly the 21 real tokens, and with 11 spare rows
        packed = prefill(PARAMS, TINY, tokens, mask, shared_1xS=shared, rows=rows)
        np.testing.assert_array_equal(packed[2], padded[2])
        np.testing.assert_allclose(packed[0], padded[0], atol=3e-5)
        real = np.asarray(padded[2])
        for a, b in zip(packed[1], padded[1]):
            np.testing.assert_allclose(np.asarray(a)[:, real], np.asarray(b)[:, real], atol=3e-5)


def test_packed_rows_round_up_and_skip_small_batches():
    assert packed_rows(100, 1024) is None  # small: not packed
    assert packed_rows(4226, 6144) == 4608  # multiples of 6144 / 16 = 384
    assert packed_rows(4224, 6144) == 4224
    assert packed_rows(6000, 6144) is None  # nothing to save


def test_large_batches_sample_with_a_packed_prefill():
    """64 prompts of a 32-token bucket are packed (generate_ids chooses it); log-probs still equal a full
    forward over the whole prompt + completion."""
    rng = np.random.default_rng(2)
    common = list(rng.integers(3, 300, 16))
    prompts = [common + list(rng.integers(3, 300, n)) for n in rng.integers(1, 20, 64)]
    assert sampler_prompts(prompts, 0, 64).prefill_rows is not None
    out, ptoks, pmask = generate_ids(PARAMS, TINY, prompts, jax.random.key(3), sampling=SamplingParams(1.0),
                                     num_samples=1, max_new_tokens=6, eos_ids=(), pad_id=0)
    for b in (0, 17, 63):
        completion = np.asarray(out.tokens_BxGxC[b, 0])
        expected = _full_forward_logprobs(PARAMS, ptoks[b], pmask[b], completion)
        np.testing.assert_allclose(np.asarray(out.logprobs_BxGxC[b, 0]), expected, atol=1e-5)
