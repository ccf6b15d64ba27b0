"""Long generations: blockwise attention in the training forward, the memory check, and linear host work."""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rft_jax.model import ModelConfig, init_params, sequence_forward
from rft_jax.model import transformer as tf
from rft_jax.model.logprobs import completion_logprobs
from rft_jax.model.lora import LoraConfig, init_lora
from rft_jax.sampling import SamplingParams, sample
from rft_jax.sampling.generate import decode_rollout
from rft_jax.sampling.sampler import Rollout
from rft_jax.serving.reasoning import ReasoningStream
from rft_jax.serving.text_stream import TextStream
from rft_jax.train.config import SamplingConfig, TrainConfig
from rft_jax.train.memory import RunShape, estimate_memory, memory_problem

TINY = ModelConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                   head_dim=8)
PARAMS = init_params(TINY, jax.random.key(0), std=0.3)
# Gemma 3's switches, with a window (5) shorter than the completions (14), so the blocks must apply it too.
WINDOWED = dataclasses.replace(TINY, architecture="gemma3", sliding_window=5, rope_local_theta=1e4,
                               layer_types=("sliding_attention", "full_attention"), post_norms=True,
                               embed_scale=True, query_pre_attn_scalar=24.0, activation="gelu_tanh")
MODELS = {"llama": (TINY, PARAMS), "gemma3_windowed": (WINDOWED, init_params(WINDOWED, jax.random.key(0), std=0.3))}


def _batch(b=2, g=3, p=6, c=14, seed=0):
    rng = np.random.default_rng(seed)
    prompt = jnp.asarray(rng.integers(3, TINY.vocab_size, (b, p)), jnp.int32)
    pmask = jnp.ones((b, p), bool).at[0, :2].set(False)  # one left-padded prompt
    completion = jnp.asarray(rng.integers(3, TINY.vocab_size, (b, g, c)), jnp.int32)
    return prompt, pmask, completion


def _small_blocks(monkeypatch, rows=4):
    """Forces the blockwise path on tiny completions, in blocks of `rows` queries (14 tokens: 4 blocks, padded)."""
    monkeypatch.setattr(tf, "LONG_COMPLETION", rows)
    monkeypatch.setattr(tf, "MIN_QUERY_BLOCK", rows)
    monkeypatch.setattr(tf, "SCORE_BLOCK_BYTES", 1)


def _logprobs_and_grads(lora, prompt, pmask, completion, model=(TINY, PARAMS), **kw):
    cfg, params = model

    def loss(lora):
        logp, entropy = completion_logprobs(params, cfg, prompt, pmask, completion, lora=lora, lora_scale=2.0, **kw)
        return (logp * jnp.linspace(-1, 1, logp.size).reshape(logp.shape)).sum() + entropy.sum(), (logp, entropy)

    return jax.jit(jax.value_and_grad(loss, has_aux=True))(lora)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_blockwise_attention_matches_one_block(monkeypatch, name):
    """Log-probs, entropies and LoRA gradients agree to float32 rounding (the custom VJP against autodiff),
    with sliding-window layers too."""
    model = MODELS[name]
    lora = init_lora(model[0], LoraConfig(rank=4), jax.random.key(1))
    lora = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(2), a.shape), lora)  # B != 0
    batch = _batch()
    assert tf.attention_query_block(2, 3, TINY.num_heads, 6, 13) is None
    (_, (logp, entropy)), grads = _logprobs_and_grads(lora, *batch, model=model)
    _small_blocks(monkeypatch)
    assert tf.attention_query_block(2, 3, TINY.num_heads, 6, 13) == 4
    (_, (logp_b, entropy_b)), grads_b = _logprobs_and_grads(lora, *batch, model=model)
    np.testing.assert_allclose(np.asarray(logp_b), np.asarray(logp), atol=2e-6)
    np.testing.assert_allclose(np.asarray(entropy_b), np.asarray(entropy), atol=2e-6)
    for a, b in zip(jax.tree.leaves(grads_b), jax.tree.leaves(grads)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6 * float(jnp.abs(b).max()))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_blockwise_attention_matches_one_block_in_the_packed_prefill(monkeypatch, name):
    """`packed_branch_forward` (the sampler's prefill of long prompt parts) takes the same attention, and
    equals the padded `branch_forward` on the real tokens (with sliding-window layers too)."""
    cfg, params = MODELS[name]
    prompt, pmask, completion = _batch(b=1, g=2)
    _, prefix_kv = sequence_forward(params, cfg, prompt[:1], pmask[:1])
    mask = jnp.ones(completion.shape, bool).at[0, 1, 9:].set(False)
    rows = int(mask.sum())

    def run():
        h, kv, _ = jax.jit(lambda p: tf.packed_branch_forward(p, cfg, completion, mask, prefix_kv, pmask[:1],
                                                              rows=rows))(params)
        return np.asarray(h), np.asarray(kv.k)

    h, k = run()
    padded, _ = tf.branch_forward(params, cfg, completion, prefix_kv, pmask[:1])
    np.testing.assert_allclose(h, np.asarray(padded).reshape(-1, cfg.hidden_size)[np.asarray(mask).reshape(-1)],
                               atol=1e-5)
    _small_blocks(monkeypatch)
    h_b, k_b = run()
    np.testing.assert_allclose(h_b, h, atol=1e-5)
    np.testing.assert_array_equal(k_b, k)


def _step_temp_bytes(c: int) -> int:
    """XLA's temporary bytes for the gradient of the log-probs of 2 completions of c tokens."""
    prompt, pmask = jnp.ones((1, 8), jnp.int32), jnp.ones((1, 8), bool)
    completion = jax.ShapeDtypeStruct((1, 2, c), jnp.int32)
    grad = jax.grad(lambda p, x: completion_logprobs(p, TINY, prompt, pmask, x)[0].sum())
    return jax.jit(grad).lower(PARAMS, completion).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.slow  # two XLA compiles at 2k and 4k tokens (about 20 s): the default suite keeps the numbers test
def test_blockwise_attention_memory_grows_linearly():
    """Twice the tokens, about twice the memory: no [C, C] scores survive into the backward pass. With the
    blocks under `jax.checkpoint` instead of the custom VJP, the CPU layer policy saved them (3.2x here)."""
    short, long = _step_temp_bytes(2048), _step_temp_bytes(4096)
    assert long / short < 2.3, (short, long)


def test_memory_estimate_counts_the_branch_cache():
    """The cache is [L, B, G, C, J, K] keys and values in the storage dtype (float32 on a CPU), B a power of 2."""
    est = estimate_memory(TINY, RunShape(3, 4, 20, 5000), compute_dtype="bfloat16", backend="cpu")
    assert est.branch_cache == 2 * 2 * 4 * 4 * 5120 * 2 * 8 * 4
    gpu = estimate_memory(TINY, RunShape(3, 4, 20, 5000), compute_dtype="bfloat16", backend="gpu")
    assert gpu.branch_cache * 2 == est.branch_cache
    remat = estimate_memory(TINY, RunShape(3, 4, 20, 5000, remat=True), compute_dtype="bfloat16", backend="gpu")
    assert remat.activations < gpu.activations
    halves = estimate_memory(TINY, RunShape(4, 4, 20, 5000, microbatches=2), compute_dtype="bfloat16", backend="gpu")
    whole = estimate_memory(TINY, RunShape(4, 4, 20, 5000), compute_dtype="bfloat16", backend="gpu")
    assert halves.activations < whole.activations and halves.branch_cache == whole.branch_cache


def test_config_takes_long_generations_and_the_memory_check_refuses_what_cannot_fit():
    """No 4096 cap: 16k tokens are a valid config; memory decides, with a message that says what to lower."""
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        TrainConfig(sampling=SamplingConfig(max_new_tokens=0))
    smol = ModelConfig()  # SmolLM2-135M's shapes
    whole = dict(sharing=jax.device_count())  # the limit holds the whole estimate, however many devices
    long = TrainConfig(batch_size=8, sampling=SamplingConfig(max_new_tokens=16384))
    assert memory_problem(long, smol, limit=2**50, **whole) is None
    message = memory_problem(long, smol, limit=24 * 2**30, **whole)
    assert message is not None
    for part in ("max_new_tokens=16384", "batch_size=8", "samples_per_prompt=8", "24.0 GiB", "grad_accum_steps",
                 "model.remat"):
        assert part in message, message
    remat = dataclasses.replace(long, model=dataclasses.replace(long.model, remat=True),
                                optimizer=dataclasses.replace(long.optimizer, grad_accum_steps=8))
    sampler_bound = memory_problem(remat, smol, limit=8 * 2**30, **whole)
    assert "sampler's caches" in sampler_bound and "grad_accum_steps" not in sampler_bound, sampler_bound
    assert memory_problem(remat, smol, limit=60 * 2**30, **whole) is None
    assert memory_problem(TrainConfig(), smol, limit=16 * 2**30, **whole) is None  # the default experiment (7.8 GiB)


def _tokenizer():
    """SmolLM2's tokenizer, rebuilt from its GGUF (skip when the package shipping it is absent)."""
    from rft_jax.model import DEFAULT_MODEL
    from rft_jax.model.tokenizer import load_tokenizer

    try:
        return load_tokenizer(DEFAULT_MODEL)
    except FileNotFoundError as err:
        pytest.skip(str(err))


def _text_rollout(ids: list[int]) -> Rollout:
    tokens = np.asarray(ids, np.int32)[None, None]
    zeros = np.zeros(tokens.shape)
    return Rollout(tokens, zeros.astype(np.float32), zeros == 0, np.asarray([[len(ids)]]), np.asarray([[False]]),
                   zeros != 0)


def _best_time(fn, repeats=5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def test_decode_rollout_is_linear_in_the_completion_length():
    """4x the tokens costs well under 16x the time (measured: 4.1x, 4.6x with a stop string's binary search)."""
    tokenizer = _tokenizer()
    text = "Let x be the number of apples. Then 3x + 5 = 20, so x = 5; déjà vu, 数学. "
    ids = tokenizer.encode(text * (16384 * 2 // len(tokenizer.encode(text)) + 1))
    stop = tokenizer.encode("</answer>")
    times = {}
    for n in (4096, 16384):
        plain = _text_rollout(ids[:n])
        stopped = _text_rollout(ids[:n - 50] + stop + ids[:50 - len(stop)])
        assert decode_rollout(tokenizer, stopped, ("</answer>",))[0][0].finish_reason == "stop"
        times[n] = _best_time(lambda p=plain, s=stopped: (decode_rollout(tokenizer, p),
                                                          decode_rollout(tokenizer, s, ("</answer>",))))
    assert times[16384] / times[4096] < 8, times


def test_streaming_a_long_thinking_is_linear_in_its_length():
    """The server's incremental detokenizer and its thinking/answer split keep only the text not shown yet:
    4x the tokens costs well under 16x the time (appending to the whole text on each token was quadratic)."""
    tokenizer = _tokenizer()
    word = tokenizer.encode(" apples")
    times = {}
    for n in (8192, 32768):
        def stream(n=n):
            text, split = TextStream(tokenizer, ("</answer>",)), ReasoningStream("<think>", "</think>")
            shown = [split.push(text.push(t)) for t in word * (n // len(word))]
            return shown, split.finish(text.flush())
        times[n] = _best_time(stream)
    assert times[32768] / times[8192] < 8, times


def _generate_and_score(c: int):
    """Samples 2 completions of exactly c tokens (no EOS can fire) and recomputes their log-probs with the
    training forward (blockwise attention for c > LONG_COMPLETION)."""
    prompt = jnp.asarray([[0, 0, 5, 17, 42, 9, 250, 7]], jnp.int32)
    pmask = prompt > 0
    out = sample(PARAMS, TINY, prompt, pmask, jax.random.key(3), params_sampling=SamplingParams(1.0), num_samples=2,
                 max_new_tokens=c, eos_ids=(), pad_id=0)
    assert np.asarray(out.lengths_BxG).tolist() == [[c, c]]
    logp, _ = jax.jit(lambda p, x: completion_logprobs(p, TINY, prompt, pmask, x))(PARAMS, out.tokens_BxGxC)
    positions = np.random.default_rng(0).choice(c, 512, replace=False)
    np.testing.assert_allclose(np.asarray(logp)[..., positions], np.asarray(out.logprobs_BxGxC)[..., positions],
                               atol=1e-4)


@pytest.mark.slow  # about 15 s; test_reasoning_forcing checks the sampler against the training forward by default
def test_sampler_and_training_forward_agree_on_a_4k_token_completion():
    assert tf.attention_query_block(1, 2, TINY.num_heads, 8, 4095) is not None
    _generate_and_score(4096)


@pytest.mark.slow  # about 70 s on 2 CPU cores
def test_sampler_and_training_forward_agree_on_a_16k_token_completion():
    _generate_and_score(16384)
