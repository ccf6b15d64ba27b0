"""A Pallas log-prob kernel on a device mesh (kernels/fused_logprob/on_mesh.py): under shard_map over 8 CPU
devices, each on its share of the tokens, the value and both gradients equal the single-device oracle's.
The unembedding's gradient is the sum of the devices' partial ones, so a missing reduction would be off by
the device count, and a wrong share of tokens would put values in the wrong rows."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from kernels.fused_logprob import api
from kernels.fused_logprob.block_sizes import BlockSizes
from rft_jax.parallel import MeshConfig, make_mesh
from tests.test_kernels_fused_logprob import _assert_matches_reference, _problem


@pytest.mark.parametrize("impl, blocks", [("pallas_gpu", BlockSizes(vocab=32, tokens=16, depth=16)),
                                          ("pallas_tpu", BlockSizes(vocab=128, tokens=8))])
def test_split_over_the_mesh_matches_the_oracle(impl, blocks, monkeypatch):
    calls = []  # each device's share of the tokens, as the kernel sees it
    fn_of = dict(api.IMPLEMENTATIONS)[impl][0]

    def spy(h, w, t, **kw):
        calls.append(h.shape[0])
        return fn_of(h, w, t, **kw)

    monkeypatch.setitem(api.IMPLEMENTATIONS, impl, (spy, api.IMPLEMENTATIONS[impl][1]))
    mesh = make_mesh(MeshConfig(2, 2, 2))
    fn = functools.partial(api.token_logprobs_and_entropy, implementation=impl, blocks=blocks, interpret=True,
                           mesh=mesh)
    h, w, t, a, b = _problem(60, 32, 200, seed=5)  # 60 tokens: 4 rows of the batch sharding, padded to 64 for 8
    on_mesh = NamedSharding(mesh, P(("data", "fsdp")))  # the batch's sharding
    h, t = jax.device_put(h, on_mesh), jax.device_put(t, on_mesh)
    _assert_matches_reference(lambda h, w, t, temperature: fn(h, w, t, temperature=temperature), h, w, t, a, b,
                              0.8)
    assert calls and set(calls) == {64 // 8}  # split: 60 tokens padded to 64, 8 a device


def test_without_a_mesh_or_with_one_device_nothing_is_split(monkeypatch):
    split = []
    monkeypatch.setattr(api, "split_over_mesh", lambda fn, mesh: split.append(mesh) or fn)
    h, w, t, *_ = _problem(8, 16, 40)
    one = make_mesh(MeshConfig(1, 1, 1), devices=jax.devices()[:1])
    for mesh in (None, one):
        api.token_logprobs_and_entropy(h, w, t, implementation="pallas_tpu", interpret=True, mesh=mesh,
                                       blocks=BlockSizes(vocab=128, tokens=8))
    api.token_logprobs_and_entropy(h, w, t, implementation="xla_chunked", mesh=make_mesh(MeshConfig(2, 2, 2)))
    assert split == []  # XLA partitions the jnp implementations itself
    assert jnp.isfinite(api.token_logprobs_and_entropy(h, w, t)[0]).all()
