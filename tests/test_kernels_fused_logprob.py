"""kernels/fused_logprob: every implementation against the plain-jnp oracle, value and gradient.

The chunked implementation runs natively; the Pallas GPU kernels run in `interpret=True` mode
on CPU (slow, so they get fewer and smaller cases). Shapes deliberately leave remainders: N and
V are not multiples of the blocks, and D is not a multiple of the Pallas depth step.
Tolerances: float32 1e-5 (rtol and atol); bfloat16 inputs 1e-2 of the largest gradient entry
(the gradient matmuls take bf16 operands, as in the naive autodiff version).
"""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.fused_logprob import api, pallas_gpu, reference, xla_chunked
from kernels.fused_logprob.block_sizes import BlockSizes

CHUNKED_BLOCKS = BlockSizes(vocab=64)
PALLAS_BLOCKS = BlockSizes(tokens=16, vocab=32, depth=16)


def _chunked(h, w, t, temperature):
    return xla_chunked.token_logprobs_and_entropy(h, w, t, temperature=temperature, blocks=CHUNKED_BLOCKS)


def _pallas(h, w, t, temperature):
    return pallas_gpu.token_logprobs_and_entropy(
        h, w, t, temperature=temperature, blocks=PALLAS_BLOCKS, interpret=True)


def _reference(h, w, t, temperature):
    return reference.token_logprobs_and_entropy(h, w, t, temperature=temperature)


def _problem(n, d, v, dtype=jnp.float32, scale=1.0, seed=0):
    """Random hidden, unembedding, targets, and loss weights for both outputs."""
    k = jax.random.split(jax.random.PRNGKey(seed), 5)
    h = (scale * jax.random.normal(k[0], (n, d))).astype(dtype)
    w = (jax.random.normal(k[1], (d, v)) / np.sqrt(d)).astype(dtype)
    t = jax.random.randint(k[2], (n,), 0, v)
    a, b = jax.random.normal(k[3], (n,)), jax.random.normal(k[4], (n,))
    return h, w, t, a, b


def _value_and_grads(fn, h, w, t, a, b, temperature):
    """(logprob, entropy) and d/d(h, w) of sum(a * logprob + b * entropy)."""
    def loss(h, w):
        lp, ent = fn(h, w, t, temperature)
        return jnp.sum(a * lp + b * ent), (lp, ent)
    (_, outs), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(h, w)
    return outs, grads


def _assert_matches_reference(fn, h, w, t, a, b, temperature, grad_tol=1e-5):
    (lp, ent), (dh, dw) = _value_and_grads(fn, h, w, t, a, b, temperature)
    # The oracle sees the same (possibly bf16-rounded) inputs, upcast to float32.
    h32, w32 = h.astype(jnp.float32), w.astype(jnp.float32)
    (lp_r, ent_r), (dh_r, dw_r) = _value_and_grads(_reference, h32, w32, t, a, b, temperature)
    assert lp.dtype == ent.dtype == jnp.float32
    assert dh.dtype == h.dtype and dw.dtype == w.dtype
    np.testing.assert_allclose(lp, lp_r, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ent, ent_r, rtol=1e-5, atol=1e-5)
    for g, g_r in ((dh, dh_r), (dw, dw_r)):
        g = np.asarray(g.astype(jnp.float32))
        np.testing.assert_allclose(g, g_r, rtol=grad_tol, atol=grad_tol * float(np.abs(g_r).max()))


@pytest.mark.parametrize("n, d, v, temperature", [
    (37, 24, 300, 1.0),   # N, V not multiples of anything; V has a 44-column tail block
    (64, 32, 256, 0.7),   # V an exact multiple of the vocab block
    (5, 8, 50, 1.3),      # V smaller than one block
])
def test_chunked_float32(n, d, v, temperature):
    _assert_matches_reference(_chunked, *_problem(n, d, v), temperature)


def test_chunked_bfloat16():
    _assert_matches_reference(_chunked, *_problem(37, 24, 300, jnp.bfloat16), 0.8, grad_tol=1e-2)


def test_chunked_large_logits_are_stable():
    """Peaked distributions (|logits| ~ 100): entropy ~ 0, no NaN or overflow."""
    _assert_matches_reference(_chunked, *_problem(19, 16, 200, scale=60.0), 1.0, grad_tol=1e-4)


@pytest.mark.parametrize("n, d, v, temperature, dtype, grad_tol", [
    (37, 24, 100, 0.7, jnp.float32, 1e-5),   # all three tails: N % 16, D % 16, V % 32
    pytest.param(16, 32, 64, 1.0, jnp.float32, 1e-5, marks=pytest.mark.slow),  # exact multiples
    (21, 16, 80, 1.0, jnp.bfloat16, 1e-2),
])
def test_pallas_interpret(n, d, v, temperature, dtype, grad_tol):
    _assert_matches_reference(_pallas, *_problem(n, d, v, dtype), temperature, grad_tol)


def _tied_grads(fn, embed_VxD, proj_DxD, ids_N, targets_N):
    """Tied embeddings: the same matrix embeds the inputs and (transposed) unembeds."""
    def loss(embed_VxD, proj_DxD):
        h = jnp.tanh(embed_VxD[ids_N] @ proj_DxD)
        lp, ent = fn(h, embed_VxD.T, targets_N, 1.0)
        return jnp.sum(lp) + 0.3 * jnp.sum(ent)
    return jax.jit(jax.grad(loss, argnums=(0, 1)))(embed_VxD, proj_DxD)


@pytest.mark.parametrize("fn", [_chunked, _pallas], ids=["xla_chunked", "pallas_interpret"])
def test_tied_unembedding(fn):
    k = jax.random.split(jax.random.PRNGKey(1), 4)
    v, d, n = 90, 16, 23
    embed, proj = jax.random.normal(k[0], (v, d)), jax.random.normal(k[1], (d, d)) / 4
    ids, targets = jax.random.randint(k[2], (n,), 0, v), jax.random.randint(k[3], (n,), 0, v)
    got = _tied_grads(fn, embed, proj, ids, targets)
    want = _tied_grads(_reference, embed, proj, ids, targets)
    for g, g_r in zip(got, want):
        np.testing.assert_allclose(g, g_r, rtol=1e-5, atol=1e-5 * float(np.abs(g_r).max()))


@pytest.mark.parametrize("fn", [_chunked, _pallas], ids=["xla_chunked", "pallas_interpret"])
def test_masked_tokens(fn):
    """Masked tokens (padding ids out of range) get exactly zero gradient; the rest match."""
    n, d, v = 29, 16, 70
    h, w, t, a, b = _problem(n, d, v, seed=3)
    mask = (jnp.arange(n) % 3 != 0).astype(jnp.float32)
    padded_t = jnp.where(mask > 0, t, jnp.where(jnp.arange(n) % 2 == 0, -1, v + 5))

    def loss(fn, targets):
        def f(h, w):
            lp, ent = fn(h, w, targets, 1.0)
            return jnp.sum(mask * (a * lp + b * ent))
        return jax.jit(jax.grad(f, argnums=(0, 1)))(h, w)

    dh, dw = loss(fn, padded_t)
    dh_r, dw_r = loss(_reference, t)  # the oracle's gather needs valid ids
    assert np.all(np.asarray(dh)[np.asarray(mask) == 0] == 0.0)
    np.testing.assert_allclose(dh, dh_r, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dw, dw_r, rtol=1e-5, atol=1e-6)


def test_chunked_never_holds_full_logits():
    """Compiled temp memory of forward+backward stays well under one [N, V] float32 array."""
    n, d, v = 512, 32, 16384
    h, w, t, a, b = _problem(n, d, v)
    blocks = BlockSizes(vocab=512)

    def loss(fn):
        return lambda h, w: jnp.sum(fn(h, w, t)[0] * a + fn(h, w, t)[1] * b)

    def temp_bytes(fn):
        grad = jax.jit(jax.grad(loss(fn), argnums=(0, 1)))
        return grad.lower(h, w).compile().memory_analysis().temp_size_in_bytes

    chunked = temp_bytes(lambda h, w, t: xla_chunked.token_logprobs_and_entropy(h, w, t, blocks=blocks))
    naive = temp_bytes(reference.token_logprobs_and_entropy)
    assert naive >= n * v * 4
    assert chunked < n * v * 4 / 4, (chunked, naive)


def test_api_dispatch_and_batch_dims():
    h, w, t, _, _ = _problem(12, 8, 40)
    h_BxTxD, t_BxT = h.reshape(3, 4, 8), t.reshape(3, 4)
    lp, ent = api.token_logprobs_and_entropy(h_BxTxD, w, t_BxT, temperature=0.9)
    lp_r, ent_r = reference.token_logprobs_and_entropy(h, w, t, temperature=0.9)
    assert lp.shape == ent.shape == (3, 4)
    np.testing.assert_allclose(lp.reshape(-1), lp_r, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ent.reshape(-1), ent_r, rtol=1e-5, atol=1e-5)
    if jax.default_backend() != "gpu":
        assert api.best_implementation() == "xla_chunked"
    lp_ref, _ = api.token_logprobs_and_entropy(h, w, t, implementation="reference", temperature=0.9)
    np.testing.assert_allclose(lp_ref, lp_r, rtol=1e-6)


def test_api_fails_loudly():
    h, w, t, _, _ = _problem(4, 8, 16)
    with pytest.raises(ValueError, match="unknown"):
        api.token_logprobs_and_entropy(h, w, t, implementation="pallas_npu")
    with pytest.raises(ValueError, match="interpret"):
        api.token_logprobs_and_entropy(h, w, t, implementation="xla_chunked", interpret=True)
    with pytest.raises(ValueError, match="targets"):
        api.token_logprobs_and_entropy(h, w, t[:3])
    with pytest.raises(ValueError, match="temperature"):
        api.token_logprobs_and_entropy(h, w, t, temperature=0.0)
    with pytest.raises(ValueError, match="power of two"):
        api.token_logprobs_and_entropy(h, w, t, implementation="pallas_gpu", interpret=True,
                                       blocks=BlockSizes(tokens=24, vocab=32, depth=16))
    if jax.default_backend() != "gpu":
        with pytest.raises(RuntimeError, match="needs a gpu backend"):
            api.token_logprobs_and_entropy(h, w, t, implementation="pallas_gpu")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, grad_tol", [(jnp.float32, 1e-3), (jnp.bfloat16, 2e-2)])
def test_pallas_gpu_full_size(dtype, grad_tol):
    """The compiled Triton kernels at a SmolLM2-like size against the chunked implementation."""
    n, d, v = 1000, 576, 49152
    h, w, t, a, b = _problem(n, d, v, dtype)

    def run(fn):
        return _value_and_grads(fn, h, w, t, a, b, 1.0)

    def gpu(h, w, t, temperature):
        return api.token_logprobs_and_entropy(h, w, t, temperature=temperature, implementation="pallas_gpu")

    def chunked(h, w, t, temperature):
        return api.token_logprobs_and_entropy(h, w, t, temperature=temperature, implementation="xla_chunked")

    (lp, ent), grads = run(gpu)
    (lp_c, ent_c), grads_c = run(chunked)
    np.testing.assert_allclose(lp, lp_c, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(ent, ent_c, rtol=1e-3, atol=1e-3)
    for g, g_c in zip(grads, grads_c):
        g, g_c = np.asarray(g.astype(jnp.float32)), np.asarray(g_c.astype(jnp.float32))
        np.testing.assert_allclose(g, g_c, rtol=grad_tol, atol=grad_tol * float(np.abs(g_c).max()))


def test_kernels_never_import_rft_jax():
    """kernels/ is a leaf: rft_jax may import it, never the other way round."""
    code = ("import sys, kernels.layout, kernels.fused_logprob; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'rft_jax'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
