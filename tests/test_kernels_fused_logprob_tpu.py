"""kernels/fused_logprob/pallas_tpu.py in jax's TPU interpreter on CPU, against the plain-jnp oracle.

The helpers and tolerances are those of test_kernels_fused_logprob.py (float32 1e-5; bfloat16 1e-2 of
the largest gradient entry). Blocks are the smallest TPU tiles (16 tokens, 128 vocabulary columns) so
tiny shapes still cross several blocks; N and V are not multiples of them (the wrapper pads, and the
padded columns must stay out of the log-sum-exp), and D is not a multiple of 128 (a block takes all of D).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import tpu as pltpu

from kernels.fused_logprob import api, pallas_tpu
from kernels.fused_logprob.block_sizes import BlockSizes
from tests.test_kernels_fused_logprob import _assert_matches_reference, _problem, _reference, _tied_grads

BLOCKS = BlockSizes(tokens=16, vocab=128)


def _tpu(h, w, t, temperature, interpret=True):
    return pallas_tpu.token_logprobs_and_entropy(h, w, t, temperature=temperature, blocks=BLOCKS,
                                                 interpret=interpret)


# The float32 case also splits the "parallel" grid axes over two simulated cores, visited in a shuffled
# order: a kernel that relied on their order (or shared state between them) would fail.
@pytest.mark.parametrize("n, d, v, temperature, dtype, grad_tol, interpret", [
    (37, 72, 300, 0.7, jnp.float32, 1e-5,     # N % 16, V % 128 (84 padded columns), D % 128
     pltpu.InterpretParams(num_cores_or_threads=2, random_seed=7)),
    (45, 64, 600, 1.3, jnp.bfloat16, 1e-2, True),
], ids=["float32-two-cores", "bfloat16"])
def test_interpret_matches_reference(n, d, v, temperature, dtype, grad_tol, interpret):
    def fn(h, w, t, temperature):
        return _tpu(h, w, t, temperature, interpret=interpret)

    _assert_matches_reference(fn, *_problem(n, d, v, dtype), temperature, grad_tol)


def test_tied_unembedding():
    k = jax.random.split(jax.random.PRNGKey(1), 4)
    v, d, n = 330, 64, 23
    embed, proj = jax.random.normal(k[0], (v, d)), jax.random.normal(k[1], (d, d)) / 8
    ids, targets = jax.random.randint(k[2], (n,), 0, v), jax.random.randint(k[3], (n,), 0, v)
    got = _tied_grads(_tpu, embed, proj, ids, targets)
    want = _tied_grads(_reference, embed, proj, ids, targets)
    for g, g_r in zip(got, want):
        np.testing.assert_allclose(g, g_r, rtol=1e-5, atol=1e-5 * float(np.abs(g_r).max()))


def test_masked_padding_targets():
    """Masked tokens get exactly zero gradient, whatever their id: -1, one inside the padded
    vocabulary columns [V, V_pad), one past them. The unmasked tokens match the oracle."""
    n, d, v, temperature = 29, 64, 300, 0.8
    h, w, t, a, b = _problem(n, d, v, seed=3)
    mask = (jnp.arange(n) % 3 != 0).astype(jnp.float32)
    pad_ids = jnp.array([-1, v + 5, 10 * v])[jnp.arange(n) % 3]
    padded_t = jnp.where(mask > 0, t, pad_ids)

    def grads(fn, targets):
        def f(h, w):
            lp, ent = fn(h, w, targets, temperature)
            return jnp.sum(mask * (a * lp + b * ent))
        return jax.jit(jax.grad(f, argnums=(0, 1)))(h, w)

    dh, dw = grads(_tpu, padded_t)
    dh_r, dw_r = grads(_reference, t)  # the oracle's gather needs valid ids
    assert np.all(np.asarray(dh)[np.asarray(mask) == 0] == 0.0)
    np.testing.assert_allclose(dh, dh_r, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dw, dw_r, rtol=1e-5, atol=1e-6)


def test_api_dispatch_and_checks():
    h, w, t, _, _ = _problem(12, 64, 200)
    lp, ent = api.token_logprobs_and_entropy(h.reshape(3, 4, 64), w, t.reshape(3, 4), temperature=0.9,
                                             implementation="pallas_tpu", blocks=BLOCKS, interpret=True)
    lp_r, ent_r = _reference(h, w, t, 0.9)
    np.testing.assert_allclose(lp.reshape(-1), lp_r, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ent.reshape(-1), ent_r, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="multiple of 16"):  # bf16 packs 16 rows per tile
        pallas_tpu.token_logprobs_and_entropy(h.astype(jnp.bfloat16), w, t, blocks=BlockSizes(tokens=8, vocab=128))
    with pytest.raises(ValueError, match="multiple of 128"):
        pallas_tpu.token_logprobs_and_entropy(h, w, t, blocks=BlockSizes(tokens=16, vocab=96))
    if jax.default_backend() != "tpu":
        with pytest.raises(RuntimeError, match="needs a tpu backend"):
            api.token_logprobs_and_entropy(h, w, t, implementation="pallas_tpu")


def test_resolve_name():
    # Pallas is opt-in everywhere until it has run on a device.
    assert api.resolve_name(None, "cpu") == api.resolve_name(None, "tpu") == api.resolve_name(None, "gpu") \
        == "xla_chunked"
    for name in ("reference", "xla_chunked", "pallas_gpu", "pallas_tpu"):
        assert api.resolve_name(name, "cpu") == name  # explicit names: checked when called
    assert api.resolve_name("pallas", "gpu") == "pallas_gpu"
    assert api.resolve_name("pallas", "tpu") == "pallas_tpu"
    with pytest.raises(RuntimeError, match="'cpu' backend.*'xla_chunked' or 'reference'"):
        api.resolve_name("pallas", "cpu")
    with pytest.raises(ValueError, match="unknown .*'triton'.*'pallas'"):
        api.resolve_name("triton", "gpu")
    assert set(api.CHOICES) >= set(api.IMPLEMENTATIONS)  # every implementation can be chosen by name


@pytest.mark.parametrize("v, vocab", [(49_152, 512), (151_936, 128), (300, 384), (1_000, 512), (640, 128)])
def test_default_vocab_block_divides_the_lane_rounded_vocabulary(v, vocab):
    assert pallas_tpu.default_blocks(v).vocab == vocab
    assert pallas_tpu.default_blocks(v).tokens == pallas_tpu.PALLAS_TPU.tokens
