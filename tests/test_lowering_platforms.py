"""The train step, the sampler and each fused log-prob kernel lowered for `cuda` and `tpu` with `jax.export`.

Nothing is compiled or run: lowering from this CPU host puts a shape, dtype or lowering-rule error that
would first show on an accelerator into the default suite, and the exported signatures are checked.

Our code picks dtypes and kernels by `jax.default_backend()` while tracing (`storage_dtype`, `rows_last`,
`resolve_compute_dtype`, the fused_logprob default), so each platform's tests run with it answering that
platform's backend: the module lowered is the one the device would run, not the CPU program lowered for
another platform. JAX caches traces without that answer in their key, so the caches are emptied on the way
in and out of each platform (a stale trace would otherwise leak either way).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export
from jax.sharding import NamedSharding

from kernels.fused_logprob.api import IMPLEMENTATIONS, token_logprobs_and_entropy
from rft_jax.data import Example
from rft_jax.grpo import GRPOLossConfig
from rft_jax.model import ModelConfig, init_params
from rft_jax.model.registry import ModelSpec
from rft_jax.parallel import MeshConfig, make_mesh
from rft_jax.parallel.rules import logical_spec
from rft_jax.rewards.spec import RewardSpec
from rft_jax.rollout.batch import RolloutBatch
from rft_jax.sampling import generate
from rft_jax.sampling.sampler import Rollout
from rft_jax.train.config import SamplingConfig, TrainConfig
from rft_jax.train.trainer import build_trainer

PLATFORMS = ("cuda", "tpu")
MODES = ("lora", "full")
BACKEND = {"cuda": "gpu", "tpu": "tpu"}  # jax.export's platform -> jax.default_backend()'s name for it
KERNEL_CALL = {"pallas_gpu": "__gpu$xla.gpu.triton", "pallas_tpu": "tpu_custom_call"}
# Triton IR has no serialization-compatibility guarantee, so export refuses it unless allowed; lowering is
# what is tested here, and every other custom call still has to be one export knows to be stable.
ALLOW_TRITON = (export.DisabledSafetyCheck.custom_call(KERNEL_CALL["pallas_gpu"]),)

TINY = ModelConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                   head_dim=8, max_position_embeddings=256)
# Every width distinct (D 32, H*K 64, J*K 16, F 96), so a swapped axis is a shape error; one KV head is
# replicated over tensor=2.
QWEN3_TINY = dataclasses.replace(TINY, architecture="qwen3", qk_norm=True, tie_embeddings=False, head_dim=16,
                                 num_kv_heads=1, intermediate_size=96)
B, G, P, C, SHORT = 4, 2, 32, 32, 16  # prompts, samples each, prompt and completion buckets, short-completion bucket


@contextlib.contextmanager
def backend_of(platform: str):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(jax, "default_backend", lambda: BACKEND[platform])
        yield


@pytest.fixture(scope="module", params=PLATFORMS)
def platform(request):
    """Traces as on `platform` (see the module docstring)."""
    jax.clear_caches()
    with backend_of(request.param):
        yield request.param
    jax.clear_caches()


def lower(jitted, platform: str, *args, **kwargs) -> export.Exported:
    """`jitted` exported for `platform`; a Pallas lowering this jaxlib has no backend for skips, saying which."""
    try:
        return export.export(jitted, platforms=(platform,), disabled_checks=ALLOW_TRITON)(*args, **kwargs)
    except ValueError as err:
        # pallas_call raises this when jaxlib lacks the Triton (GPU) or Mosaic (TPU) lowering modules.
        if "Cannot lower pallas_call on platform" not in str(err):
            raise
        kind = {"cuda": "Triton (pallas_gpu)", "tpu": "Mosaic (pallas_tpu)"}[platform]
        pytest.skip(f"{kind} lowering for {platform} needs that backend's Pallas support in jaxlib, which this "
                    f"install lacks: ValueError: {str(err).split('.')[0]}")


def custom_calls(exp: export.Exported) -> set[str]:
    return set(re.findall(r"stablehlo\.custom_call @([\w$.]+)", exp.mlir_module()))


def avals(tree) -> list[tuple[tuple[int, ...], jnp.dtype]]:
    return [(tuple(x.shape), jnp.dtype(x.dtype)) for x in jax.tree.leaves(tree)]


def abstract(tree):
    """ShapeDtypeStructs, shardings included, of placed arrays."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class _Bytes:
    """A tokenizer for the trainer's rollouts: the last message's bytes after a start token."""

    eos_ids, pad_id = (1,), 0

    def apply_chat_template(self, messages, tools=None):
        return [2] + [3 + b for b in messages[-1]["content"].encode()]


def tiny_trainer(mode: str):
    """`build_trainer` on a 2x2x2 mesh with the default dtypes; LoRA asks for the platform's Pallas kernel (run
    under shard_map on the mesh), full fine-tuning takes the default one. Both take two PPO epochs (so the
    trainer also jits its recompute of the old log-probs); full fine-tuning takes a Qwen3-style model (q/k
    norms, untied unembedding) and the KL reference. The weights are numpy zeros: nothing runs, and they
    compile nothing."""
    model_cfg = TINY if mode == "lora" else QWEN3_TINY
    kernel = "pallas" if mode == "lora" else "auto"
    cfg = TrainConfig(model=ModelSpec(name="unused", logprob_impl=kernel), reward=RewardSpec("unused"), mode=mode,
                      batch_size=B, ppo_epochs=2,
                      sampling=SamplingConfig(samples_per_prompt=G, max_new_tokens=C),
                      loss=GRPOLossConfig(beta=0.0 if mode == "lora" else 0.04))
    shapes = jax.eval_shape(functools.partial(init_params, model_cfg), jax.random.key(0))
    params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    return build_trainer(cfg, model_cfg, params, _Bytes(), None, make_mesh(MeshConfig(2, 2, 2)), steps=4)


@pytest.fixture(scope="module")
def trainers():
    """(trainer, state) of each platform and mode, all built at once: building traces nothing, and its eager
    work then compiles once rather than again after each platform's cache clearing."""
    built = {}
    for platform_ in PLATFORMS:
        with backend_of(platform_):
            built.update({(platform_, mode): tiny_trainer(mode) for mode in MODES})
    return built


def abstract_batch(shardings: RolloutBatch) -> RolloutBatch:
    """A packed batch (`pack_groups`'s dtypes, loss mask and behaviour log-probs filled in) on the step's shardings."""
    shapes = RolloutBatch((B, P), (B, P), (B, G, C), (B, G, C), (B, G, C), (B, G), (B, G), (B, G, C), (B, G, C))
    dtypes = RolloutBatch(jnp.int32, bool, jnp.int32, bool, jnp.float32, jnp.float32, bool, bool, jnp.float32)
    return RolloutBatch(*(jax.ShapeDtypeStruct(s, d, sharding=sh) for s, d, sh in zip(shapes, dtypes, shardings)))


@pytest.mark.parametrize("mode", MODES)
def test_train_step_lowers(platform, trainers, mode):
    """The sharded step the trainer jits: LoRA with the platform's Pallas kernel, full with the default
    (xla_chunked until the Pallas kernels have run on a device)."""
    trainer, state = trainers[platform, mode]
    impl = trainer.step_settings.logprob_impl
    assert trainer.step_settings.dtype == "bfloat16"
    assert IMPLEMENTATIONS[impl][1] in (None, (BACKEND[platform],)), f"the step picked {impl} for {platform}"
    args = abstract((state, trainer.frozen, trainer.reference))
    batch = abstract_batch(trainer.shardings.batch)
    exp = lower(trainer.step_fn.jitted, platform, *args, batch, SHORT)

    assert exp.platforms == (platform,) and exp.nr_devices == 8
    assert avals(exp.in_avals) == avals((args, batch))
    new_state, metrics = jax.tree.unflatten(exp.out_tree, exp.out_avals)
    assert avals(new_state) == avals(state)  # same shapes and dtypes: the donated buffers are reused
    assert all(m.shape == () for m in metrics.values()) and "actor/loss" in metrics
    out_specs = [s.spec for s in exp.out_shardings_jax(trainer.mesh)[:len(jax.tree.leaves(state))]]
    assert out_specs == [s.spec for s in jax.tree.leaves(trainer.shardings.state)]
    if impl in KERNEL_CALL:
        assert KERNEL_CALL[impl] in custom_calls(exp)

    # The proximal log-probs recomputed before the first of two PPO passes, with the same kernel.
    old = lower(trainer.old_logp_fn, platform, args[0].trainable, args[1], batch, SHORT)
    assert avals(old.out_avals) == [((B, G, C), jnp.float32)]
    if impl in KERNEL_CALL:
        assert KERNEL_CALL[impl] in custom_calls(old)


class _Lowered(Exception):  # noqa: N818 (carries the result out of generate_ids, not an error)
    def __init__(self, exported: export.Exported):
        self.exported = exported


@pytest.mark.parametrize("mode", MODES)
def test_sampler_lowers(platform, trainers, mode, monkeypatch):
    """The trainer's rollouts down to the jitted sampler's call, which is exported instead of run."""
    trainer, state = trainers[platform, mode]
    product_sampler = generate.mesh_sampler

    def exporting_sampler(mesh):
        def call(*args, **kwargs):
            raise _Lowered(lower(product_sampler(mesh), platform, *args, **kwargs))
        return call

    monkeypatch.setattr(generate, "mesh_sampler", exporting_sampler)
    # The prompts share a 16-token start, so the prefill runs it once and each prompt's rest against it.
    examples = [Example(f"e{i}", [{"role": "user", "content": f"Answer briefly, please. Q{i}: {'x' * i}"}])
                for i in range(B)]
    with pytest.raises(_Lowered) as lowered:
        trainer.rollouts(state, examples, jax.random.key(0))
    exp = lowered.value.exported

    assert exp.platforms == (platform,) and exp.nr_devices == 8
    rollout = Rollout(*jax.tree.unflatten(exp.out_tree, exp.out_avals))
    assert avals(rollout) == [((B, G, C), jnp.int32), ((B, G, C), jnp.float32), ((B, G, C), bool),
                              ((B, G), jnp.int32), ((B, G), bool), ((B, G, C), bool)]
    (params, *_), kwargs = jax.tree.unflatten(exp.in_tree, exp.in_avals)
    assert {jnp.dtype(a.dtype) for a in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
    assert kwargs["shared_1xS"] is not None


def kernel_cases():
    """(implementation, platform) for every platform the implementation runs on (backends None: all)."""
    return [(name, p) for p in PLATFORMS for name, (_, backends) in IMPLEMENTATIONS.items()
            if backends is None or BACKEND[p] in backends]


@pytest.mark.parametrize(("dtype", "sharded"), [("bfloat16", False), ("float32", False), ("bfloat16", True)],
                         ids=["bfloat16", "float32", "bfloat16-mesh"])
@pytest.mark.parametrize(("impl", "platform"), kernel_cases(), indirect=["platform"])
def test_kernel_lowers(impl, platform, dtype, sharded):
    """Value and gradient of each implementation, alone or on the step's mesh with its shardings (tokens on the
    batch axes, the unembedding as the parameter table has it); shapes are not multiples of the blocks."""
    n, d, v = 100, 64, 300
    mesh = make_mesh(MeshConfig(2, 2, 2))
    # Through the api (the platform's backend is patched in): on the mesh a Pallas kernel runs under shard_map,
    # as Mosaic refuses a pallas_call XLA would have to partition and Triton's would run whole on every device.
    fn = functools.partial(token_logprobs_and_entropy, temperature=0.7, implementation=impl,
                           mesh=mesh if sharded else None)
    specs = [logical_spec(axes, shape, mesh) for axes, shape in
             ((("batch", "embed"), (n, d)), (("embed", "vocab"), (d, v)), (("batch",), (n,)))]
    shardings = [NamedSharding(mesh, s) for s in specs] if sharded else [None] * 3
    hidden, unembed, targets = (jax.ShapeDtypeStruct(shape, t, sharding=sh) for shape, t, sh in
                                zip(((n, d), (d, v), (n,)), (dtype, dtype, jnp.int32), shardings))

    def loss(h, w, t):
        logprob, entropy = fn(h, w, t)
        return jnp.sum(logprob) + 0.1 * jnp.sum(entropy)

    value = lower(jax.jit(fn), platform, hidden, unembed, targets)
    grad = lower(jax.jit(jax.grad(loss, argnums=(0, 1))), platform, hidden, unembed, targets)
    for exp in (value, grad):
        assert exp.platforms == (platform,) and exp.nr_devices == (8 if sharded else 1)
        if impl in KERNEL_CALL:
            assert KERNEL_CALL[impl] in custom_calls(exp)
            if sharded:  # the kernel sits in a manual (shard_map) region, each device on its share of tokens
                assert re.search(r"sdy\.manual_computation|SPMDFullToShardShape", exp.mlir_module())
    assert avals(value.out_avals) == [((n,), jnp.float32)] * 2
    assert avals(grad.out_avals) == avals((hidden, unembed))
