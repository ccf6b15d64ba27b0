"""bf16 compute paths: the custom gradients that keep the backward pass in bf16, and bf16 end to end.

The fast paths on a CPU (rft_jax.model.precision and layers: mixed_einsum,
rows_last, lora_delta, storage_dtype, layer_checkpoint) change how gradients are computed, not what
they are: each is checked against plain autodiff.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.fused_logprob.api import token_logprobs_and_entropy
from rft_jax.model import ModelConfig, init_params
from rft_jax.model.layers import lora_delta
from rft_jax.model.logprobs import completion_logprobs
from rft_jax.model.lora import LoraConfig, init_lora
from rft_jax.model.precision import mixed_einsum
from rft_jax.sampling import SamplingParams, sample

TINY = ModelConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                   head_dim=8)


def _bf16_exact(key, shape, scale=1.0):
    """Random values exactly representable in bf16, so f32 and bf16 products differ only by accumulation."""
    return (jax.random.normal(key, shape) * scale).astype(jnp.bfloat16).astype(jnp.float32)


@pytest.mark.parametrize("spec,sa,sb", [("...d,de->...e", (3, 5, 16), (16, 24)),
                                        ("nd,de->ne", (14, 16), (16, 24)),  # a dense layer: input transposed
                                        ("nd,de->ne", (14, 24), (24, 16)),  # ... or output gradient transposed
                                        ("nd,de->ne", (15, 16), (16, 24)),  # odd rows: the plain transpose
                                        ("bgcjqk,bpjk->bgjqcp", (2, 3, 4, 2, 2, 8), (2, 6, 2, 8)),
                                        ("bjqts,bsjk->btjqk", (2, 2, 3, 5, 5), (2, 5, 2, 8))])
def test_mixed_einsum_value_and_gradients_match_autodiff(spec, sa, sb):
    a, b = _bf16_exact(jax.random.key(0), sa), _bf16_exact(jax.random.key(1), sb)
    g = _bf16_exact(jax.random.key(2), jnp.einsum(spec, a, b).shape)
    # jitted: the layouts XLA assigns across the whole backward are what the CPU fast paths depend on
    ours = jax.jit(jax.grad(lambda a, b: (mixed_einsum(spec, a, b, jnp.bfloat16) * g).sum(), (0, 1)))(a, b)
    plain = jax.grad(lambda a, b: (jnp.einsum(spec, a, b) * g).sum(), (0, 1))(a, b)
    np.testing.assert_allclose(mixed_einsum(spec, a, b, jnp.bfloat16), jnp.einsum(spec, a, b), rtol=1e-5, atol=1e-5)
    for x, y in zip(ours, plain):  # the gradient products see bf16-exact inputs, so only sums differ
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-6), (jnp.bfloat16, 2e-2)])
def test_lora_delta_gradients_match_autodiff(dtype, tol):
    x = jax.random.normal(jax.random.key(0), (2, 7, 16))
    a = jax.random.normal(jax.random.key(1), (16, 4)) * 0.3
    b = jax.random.normal(jax.random.key(2), (4, 12)) * 0.3
    g = jax.random.normal(jax.random.key(3), (2, 7, 12))

    def plain(x, a, b):
        return jnp.einsum("...d,dr,re->...e", x, a, b) * 2.0

    ours = jax.jit(jax.grad(lambda *p: (lora_delta(*p, 2.0, jnp.dtype(dtype)) * g).sum(), (0, 1, 2)))(x, a, b)
    want = jax.grad(lambda *p: (plain(*p) * g).sum(), (0, 1, 2))(x, a, b)
    for o, w in zip(ours, want):
        np.testing.assert_allclose(o, w, rtol=tol, atol=tol * float(jnp.abs(w).max()))


def test_fused_logprob_with_float32_storage_and_bf16_hidden():
    """A float32-stored unembedding with bf16 hiddens multiplies in bf16: the same as both in bf16."""
    h = jax.random.normal(jax.random.key(0), (50, 32)).astype(jnp.bfloat16)
    w = jax.random.normal(jax.random.key(1), (32, 300)) * 0.2
    t = jax.random.randint(jax.random.key(2), (50,), 0, 300)

    def loss(h, w, impl_w):
        lp, ent = token_logprobs_and_entropy(h, impl_w(w), t, implementation="xla_chunked")
        return (lp + 0.1 * ent).sum()

    stored = jax.jit(jax.value_and_grad(loss, (0, 1)), static_argnums=2)(h, w, lambda w: w)
    both = jax.value_and_grad(loss, (0, 1))(h, w, lambda w: w.astype(jnp.bfloat16))
    np.testing.assert_allclose(stored[0], both[0], rtol=1e-5)
    np.testing.assert_allclose(stored[1][0].astype(jnp.float32), both[1][0].astype(jnp.float32), rtol=2e-2, atol=1e-2)
    np.testing.assert_allclose(stored[1][1], both[1][1].astype(jnp.float32), rtol=2e-2, atol=1e-3)


def _batch():
    rng = np.random.default_rng(0)
    prompt = jnp.asarray(rng.integers(3, 300, (2, 6)), jnp.int32)
    pmask = jnp.asarray(np.array([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], bool))
    completion = jnp.asarray(rng.integers(3, 300, (2, 3, 5)), jnp.int32)
    return prompt, pmask, completion


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_bf16_training_forward_and_gradient_track_float32(mode):
    """The whole bf16 training forward (fused kernel, mixed einsums, custom LoRA backward, checkpoint
    policy) gives log-probs within bf16 rounding of float32 and a gradient pointing the same way."""
    params = init_params(TINY, jax.random.key(0), std=0.3)
    lora = jax.tree.map(lambda a: a + 0.1, init_lora(TINY, LoraConfig(rank=4, alpha=8.0), jax.random.key(1)))
    prompt, pmask, completion = _batch()
    weights = jax.random.normal(jax.random.key(3), completion.shape)

    def loss(trainable, dtype):
        p, lo = (params, trainable) if mode == "lora" else (trainable, None)
        logp, _ = completion_logprobs(p, TINY, prompt, pmask, completion, lora=lo, lora_scale=2.0, dtype=dtype,
                                      remat=False)
        return (logp * weights).sum(), logp

    trainable = lora if mode == "lora" else params
    (l32, lp32), g32 = jax.value_and_grad(loss, has_aux=True)(trainable, jnp.float32)
    (l16, lp16), g16 = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)(trainable, jnp.bfloat16)
    np.testing.assert_allclose(lp16, lp32, atol=0.15)
    flat32 = jnp.concatenate([x.ravel() for x in jax.tree.leaves(g32)])
    flat16 = jnp.concatenate([x.astype(jnp.float32).ravel() for x in jax.tree.leaves(g16)])
    cosine = float(flat32 @ flat16 / jnp.linalg.norm(flat32) / jnp.linalg.norm(flat16))
    assert cosine > 0.99, cosine


@pytest.mark.parametrize("adapter", ["none", "small_lora"])
def test_bf16_sampler_logprobs_equal_the_training_forward(adapter):
    """What the bf16 sampler records is what the bf16 training forward computes for those tokens, to float32
    rounding: the decode rounds its attention weights as the training forward does, and keeps LoRA beside the
    weights. Merged into bf16 weights, an adapter of this size (below the weights' rounding step) moved the
    sampler's log-probs by about 0.08 away from the trainer's; with f32 attention weights on the cache,
    by about 0.01 even without LoRA."""
    params = init_params(TINY, jax.random.key(0), std=0.3)
    lora, scale = None, 2.0
    if adapter == "small_lora":
        lora = init_lora(TINY, LoraConfig(rank=4, alpha=8.0), jax.random.key(1))
        lora = jax.tree.map(lambda a: a + 0.003 * jax.random.normal(jax.random.key(2), a.shape), lora)
    prompt, pmask, _ = _batch()
    out = sample(params, TINY, prompt, pmask, jax.random.key(4), params_sampling=SamplingParams(1.0), num_samples=3,
                 max_new_tokens=8, eos_ids=(), pad_id=0, dtype=jnp.bfloat16, lora=lora, lora_scale=scale)
    logp, _ = completion_logprobs(params, TINY, prompt, pmask, out.tokens_BxGxC, lora=lora, lora_scale=scale,
                                  dtype=jnp.bfloat16, remat=False)
    np.testing.assert_allclose(out.logprobs_BxGxC, logp, atol=1e-5)
    if lora is not None:  # the adapter matters: the comparison is not vacuous
        base, _ = completion_logprobs(params, TINY, prompt, pmask, out.tokens_BxGxC, dtype=jnp.bfloat16, remat=False)
        assert float(jnp.abs(logp - base).mean()) > 0.01
