"""Sharding changes where the work runs, never the result: a GRPO step and the sampler on 8 fake CPU
devices laid out as data=2 x fsdp=2 x tensor=2 and as fsdp=8 match the unsharded run."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rft_jax.grpo import GRPOLossConfig, OptimizerConfig, group_advantages, make_optimizer
from rft_jax.model import ModelConfig, init_params
from rft_jax.model.lora import LoraConfig, init_lora
from rft_jax.parallel import MeshConfig, make_mesh, param_shardings, place
from rft_jax.sampling import SamplingParams, sample
from rft_jax.sampling.generate import generate_ids
from rft_jax.train.sharded_step import jit_sharded_train_step, step_shardings
from rft_jax.train.step import RolloutBatch, StepSettings, TrainState, jit_train_step

TINY = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                   head_dim=8)
LAYOUTS = {"dp2_fsdp2_tp2": MeshConfig(data=2, fsdp=2, tensor=2), "fsdp8": MeshConfig(fsdp=8)}
B, G, C, P = 8, 4, 8, 6
# float32 with "highest" matmuls; sharded reductions only change the summation order.
LOSS_TOL = dict(rtol=1e-5, atol=1e-6)
# Gradients (Adam's moments) match tightly. Adam then divides by sqrt(v): for a near-zero gradient the
# summation-order noise moves the update by a visible fraction of lr (1e-2 here), so parameters get an
# absolute tolerance of 1e-4, a hundredth of one Adam step.
MOMENT_TOL = dict(rtol=1e-5, atol=2e-6)
PARAM_TOL = dict(rtol=1e-5, atol=1e-4)


def _prompts():
    rng = np.random.default_rng(3)
    ids = [list(rng.integers(3, 64, n)) for n in rng.integers(2, P + 1, B)]
    tokens = np.zeros((B, P), np.int32)
    mask = np.zeros((B, P), bool)
    for i, row in enumerate(ids):
        tokens[i, P - len(row):], mask[i, P - len(row):] = row, True
    return ids, tokens, mask


@pytest.fixture(scope="module")
def setup():
    params = init_params(TINY, jax.random.key(0), std=0.2)
    _, tokens, mask = _prompts()
    out = sample(params, TINY, jnp.asarray(tokens), jnp.asarray(mask), jax.random.key(5),
                 params_sampling=SamplingParams(1.0), num_samples=G, max_new_tokens=C, eos_ids=(1,), pad_id=0)
    rewards = jnp.mean((out.tokens_BxGxC % 3 == 0) & out.mask_BxGxC, axis=-1).astype(jnp.float32)
    batch = RolloutBatch(jnp.asarray(tokens), jnp.asarray(mask), out.tokens_BxGxC, out.mask_BxGxC,
                         out.logprobs_BxGxC, group_advantages(rewards), ~out.stopped_BxG).with_loss_mask()
    return params, batch


def _two_steps(params, batch, mode: str, layout: MeshConfig | None):
    opt = make_optimizer(OptimizerConfig(learning_rate=1e-2), 10)
    if mode == "lora":
        trainable, frozen, scale = init_lora(TINY, LoraConfig(rank=4), jax.random.key(1)), params, 1.0
    else:
        trainable, frozen, scale = jax.tree.map(jnp.copy, params), None, None  # donated: keep the fixture
    state = TrainState(trainable, opt.init(trainable), jnp.int32(0))
    # Full: with a KL term (reference pass) and two micro-batches; LoRA: the default loss, one batch.
    loss = GRPOLossConfig(beta=0.04 if mode == "full" else 0.0)
    settings = StepSettings(TINY, loss, lora_scale=scale, temperature=1.0, dtype="float32", remat=False,
                            microbatches=2 if mode == "full" else 1)
    # A separate copy: the donated state must not share buffers with the reference.
    reference = jax.tree.map(jnp.copy, params) if mode == "full" else None
    if layout is None:
        step = jit_train_step(opt, settings)
    else:
        sh = step_shardings(make_mesh(layout), opt, state, frozen, reference, B, lora_mode=mode == "lora")
        state, frozen, reference, batch = place((state, frozen, reference, batch),
                                                (sh.state, sh.frozen, sh.reference, sh.batch))
        step = jit_sharded_train_step(opt, settings, sh)
    losses = []
    for _ in range(2):
        state, metrics = step(state, frozen, reference, batch)
        losses.append(float(metrics["actor/loss"]))
    return losses, state


@pytest.mark.parametrize("mode", ["lora", pytest.param("full", marks=pytest.mark.slow)])  # full: 25 s more
def test_sharded_step_matches_unsharded(setup, mode):
    params, batch = setup
    want_losses, want = _two_steps(params, batch, mode, None)
    for name, layout in LAYOUTS.items():
        losses, got = _two_steps(params, batch, mode, layout)
        np.testing.assert_allclose(losses, want_losses, **LOSS_TOL, err_msg=name)
        jax.tree.map(lambda a, b, name=name: np.testing.assert_allclose(np.asarray(a), np.asarray(b), **PARAM_TOL,
                                                                        err_msg=name), got.trainable, want.trainable)
        jax.tree.map(lambda a, b, name=name: np.testing.assert_allclose(np.asarray(a), np.asarray(b), **MOMENT_TOL,
                                                                        err_msg=name), got.opt_state, want.opt_state)
        # out_shardings keep the new state where the rules put the old one.
        assert jax.tree.leaves(got.trainable)[0].sharding.mesh.shape == make_mesh(layout).shape


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_sampler_gives_the_same_tokens_under_each_layout(setup, name):
    params, _ = setup
    ids, tokens, mask = _prompts()
    kw = dict(params_sampling=SamplingParams(1.0), num_samples=G, max_new_tokens=16, eos_ids=(1,), pad_id=0)
    mesh = make_mesh(LAYOUTS[name])
    got, got_tokens, _ = generate_ids(place(params, param_shardings(params, mesh)), TINY, ids, jax.random.key(9),
                                      sampling=kw["params_sampling"], num_samples=G, max_new_tokens=16, eos_ids=(1,),
                                      pad_id=0, mesh=mesh)
    # generate_ids pads prompts to the 32-token bucket; do the same for the unsharded reference.
    pad = np.zeros((B, 32 - P), np.int32)
    want = sample(params, TINY, jnp.asarray(np.concatenate([pad, tokens], 1)),
                  jnp.asarray(np.concatenate([pad.astype(bool), mask], 1)), jax.random.key(9), **kw)
    np.testing.assert_array_equal(got.tokens_BxGxC, np.asarray(want.tokens_BxGxC))
    np.testing.assert_array_equal(got.lengths_BxG, np.asarray(want.lengths_BxG))
    np.testing.assert_allclose(got.logprobs_BxGxC, np.asarray(want.logprobs_BxGxC), rtol=1e-5, atol=1e-5)
