"""The rules table decides every sharding: parameters, adapters, optimizer state, batches, KV cache, mesh."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from rft_jax.grpo import OptimizerConfig, make_optimizer
from rft_jax.model import KV, ModelConfig, init_params
from rft_jax.model.lora import LoraConfig, init_lora
from rft_jax.parallel import (
    MeshConfig,
    cache_sharding,
    lora_shardings,
    make_mesh,
    mesh_shape,
    param_shardings,
    place,
)
from rft_jax.parallel.rules import decode_kv_shardings
from rft_jax.train.sharded_step import step_shardings
from rft_jax.train.step import TrainState

TINY = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                   head_dim=8, tie_embeddings=False, qkv_bias=True, qk_norm=True)

# What RULES say for data=2 x fsdp=2 x tensor=2: weights split on D over fsdp and on heads/MLP/vocab over tensor.
EXPECTED = {
    "embed": P("tensor", "fsdp"), "unembed": P("fsdp", "tensor"), "final_norm": P(None),
    "layers.attn_norm": P(None, None), "layers.mlp_norm": P(None, None),
    "layers.q_norm": P(None, None), "layers.k_norm": P(None, None),
    "layers.q.w": P(None, "fsdp", "tensor"), "layers.q.b": P(None, "tensor"),
    "layers.k.w": P(None, "fsdp", "tensor"), "layers.k.b": P(None, "tensor"),
    "layers.v.w": P(None, "fsdp", "tensor"), "layers.v.b": P(None, "tensor"),
    "layers.o.w": P(None, "tensor", "fsdp"),
    "layers.gate.w": P(None, "fsdp", "tensor"), "layers.up.w": P(None, "fsdp", "tensor"),
    "layers.down.w": P(None, "tensor", "fsdp"),
}
EXPECTED_LORA = {"layers.q.a": P(None, "fsdp", None), "layers.q.b": P(None, None, "tensor"),
                 "layers.down.a": P(None, "tensor", None), "layers.down.b": P(None, None, "fsdp")}


def _flat(tree) -> dict:
    return {".".join(str(k.key) for k in path): x for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.fixture(scope="module")
def mesh():
    return make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))


def test_every_parameter_is_placed_as_the_rules_say(mesh):
    params = init_params(TINY, jax.random.key(0))
    placed = place(params, param_shardings(params, mesh))
    got = {name: x.sharding.spec for name, x in _flat(placed).items()}
    assert got == EXPECTED
    lora = init_lora(TINY, LoraConfig(rank=4, targets=("q", "down")), jax.random.key(1))
    got_lora = {name: x.sharding.spec for name, x in _flat(place(lora, lora_shardings(lora, mesh))).items()}
    assert got_lora == EXPECTED_LORA


def test_optimizer_moments_follow_their_parameters(mesh):
    params = init_params(TINY, jax.random.key(0))
    opt = make_optimizer(OptimizerConfig(), 10)
    state = TrainState(params, opt.init(params), jnp.int32(0))
    sh = step_shardings(mesh, opt, state, None, None, batch_size=8, lora_mode=False)
    specs = [s.spec for s in jax.tree.leaves(sh.state.opt_state)]
    moments = [spec for spec in specs if spec != P()]  # mu and nu: one per parameter each
    assert moments == [s.spec for s in jax.tree.leaves(sh.state.trainable)] * 2
    assert sh.batch.completion_BxGxC.spec == P(("data", "fsdp"), None, None)
    assert sh.batch.advantages_BxG.spec == P(("data", "fsdp"), None)
    # Abstract shapes give the same answer (no arrays needed to plan a run).
    abstract = jax.eval_shape(lambda: state)
    assert step_shardings(mesh, opt, abstract, None, None, 8, False) == sh


def test_dimensions_a_mesh_axis_does_not_divide_are_replicated_over_it(mesh):
    # 3 KV heads on tensor=2, a batch of 2 on data x fsdp = 4, on a KV cache k_LxBxGxSxJxK.
    assert cache_sharding((2, 8, 4, 16, 2, 8), mesh).spec == P(None, ("data", "fsdp"), None, None, "tensor", None)
    assert cache_sharding((2, 2, 4, 16, 3, 8), mesh).spec == P(None, "data", None, None, None, None)
    assert cache_sharding((2, 8, 5, 2, 8), mesh).spec == P(None, ("data", "fsdp"), None, "tensor", None)


def test_sampler_decode_layouts_follow_the_table(mesh):
    # Per-layer branch cache k_RxJxKxS / v_RxJxSxK (R = B*G rows) and prompt k_BxJxKxP / v_BxJxPxK.
    cache = [KV(np.zeros((16, 2, 8, 32)), np.zeros((16, 2, 32, 8)))]
    (k, v), = decode_kv_shardings(cache, mesh, prefix=False)
    assert k.spec == P(("data", "fsdp"), "tensor", None, None) and v.spec == P(("data", "fsdp"), "tensor", None, None)
    prompt = [KV(np.zeros((8, 3, 8, 24)), np.zeros((8, 3, 24, 8)))]
    (k, v), = decode_kv_shardings(prompt, mesh, prefix=True)
    assert k.spec == P(("data", "fsdp"), None, None, None) == v.spec  # 3 KV heads do not split on tensor=2


def test_mesh_shape_resolves_the_rest_and_refuses_mismatches():
    assert mesh_shape(MeshConfig(), 8) == (1, 8, 1)
    assert mesh_shape(MeshConfig(data=2, fsdp=-1, tensor=2), 8) == (2, 2, 2)
    assert mesh_shape(MeshConfig(data=-1, fsdp=1, tensor=4), 8) == (2, 1, 4)
    with pytest.raises(ValueError, match="needs 4 devices"):
        mesh_shape(MeshConfig(data=2, fsdp=2, tensor=1), 8)
    with pytest.raises(ValueError, match="not divisible"):
        mesh_shape(MeshConfig(data=3), 8)
