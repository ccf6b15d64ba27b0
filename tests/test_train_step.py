"""GRPO training pieces on tiny random models: LoRA identities, gradients, and learning a toy reward."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rft_jax.data.example import Example
from rft_jax.grpo import GRPOLossConfig, OptimizerConfig, group_advantages, make_optimizer
from rft_jax.model import ModelConfig, init_params, sequence_forward
from rft_jax.model.logprobs import completion_logprobs
from rft_jax.model.lora import LoraConfig, init_lora, load_peft_adapter, merge_lora, save_peft_adapter
from rft_jax.rollout.batch import pack_groups, short_completion_len
from rft_jax.rollout.episode import Episode
from rft_jax.sampling import SamplingParams, sample
from rft_jax.train.step import (
    RolloutBatch,
    StepSettings,
    TrainState,
    batch_gradients,
    batch_loss,
    batch_loss_weights,
    jit_train_step,
)

TINY = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                   head_dim=8)


def _tokens(shape, seed=0, vocab=64):
    return jnp.asarray(np.random.default_rng(seed).integers(3, vocab, shape), jnp.int32)


def test_lora_with_zero_b_equals_base():
    params = init_params(TINY, jax.random.key(0), std=0.2)
    lora = init_lora(TINY, LoraConfig(rank=4), jax.random.key(1))
    x = _tokens((2, 9))
    m = jnp.ones_like(x, bool)
    base, _ = sequence_forward(params, TINY, x, m)
    adapted, _ = sequence_forward(params, TINY, x, m, lora=lora, lora_scale=2.0)
    np.testing.assert_array_equal(np.asarray(base), np.asarray(adapted))


def test_merged_export_equals_adapter_forward(tmp_path):
    params = init_params(TINY, jax.random.key(0), std=0.2)
    cfg = LoraConfig(rank=4, alpha=8.0, targets=("q", "v", "gate", "down"))
    lora = init_lora(TINY, cfg, jax.random.key(1))
    lora = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(2), a.shape), lora)  # B != 0
    x = _tokens((2, 9))
    m = jnp.ones_like(x, bool)
    h_adapter, _ = sequence_forward(params, TINY, x, m, lora=lora, lora_scale=cfg.scale)
    h_merged, _ = sequence_forward(merge_lora(params, lora, cfg.scale), TINY, x, m)
    np.testing.assert_allclose(np.asarray(h_adapter), np.asarray(h_merged), atol=1e-5)
    save_peft_adapter(tmp_path, TINY, lora, cfg)
    loaded, loaded_cfg = load_peft_adapter(tmp_path, TINY)
    assert (loaded_cfg.rank, loaded_cfg.alpha, set(loaded_cfg.targets)) == (cfg.rank, cfg.alpha, set(cfg.targets))
    jax.tree.map(np.testing.assert_array_equal, loaded, lora)


def _batch(params, key, b=2, g=4, c=6, p=5):
    prompt = _tokens((b, p), seed=3)
    pmask = jnp.ones((b, p), bool).at[1, :2].set(False)
    out = sample(params, TINY, prompt, pmask, key, params_sampling=SamplingParams(1.0), num_samples=g,
                 max_new_tokens=c, eos_ids=(1,), pad_id=0)
    rewards = jnp.asarray(np.random.default_rng(0).random((b, g)), jnp.float32)
    return RolloutBatch(prompt, pmask, out.tokens_BxGxC, out.mask_BxGxC, out.logprobs_BxGxC,
                        group_advantages(rewards), ~out.stopped_BxG)


def test_loss_gradient_matches_finite_differences():
    params = init_params(TINY, jax.random.key(0), std=0.2)
    lora = init_lora(TINY, LoraConfig(rank=2, targets=("q", "up")), jax.random.key(1))
    lora = jax.tree.map(lambda a: a + 0.05 * jax.random.normal(jax.random.key(4), a.shape), lora)
    batch = _batch(params, jax.random.key(5))
    # Wide clip range: the clip's kinks are not differentiable, and a finite difference that straddles one
    # (a ratio near 1 +- epsilon) measures the kink, not the gradient. Clipping itself is tested in test_grpo_loss.
    loss_cfg = GRPOLossConfig(beta=0.1, kl_estimator="k3", epsilon_low=0.99, epsilon_high=100.0)
    s = StepSettings(TINY, loss_cfg, lora_scale=1.0, temperature=1.0, dtype="float32", remat=False,
                     use_old_logp=True)
    loss_fn = lambda tr: batch_loss(tr, params, None, batch, s)[0]  # noqa: E731
    grads = jax.grad(loss_fn)(lora)
    direction = jax.tree.map(lambda a: jax.random.normal(jax.random.key(6), a.shape), lora)
    eps = 1e-3
    plus = loss_fn(jax.tree.map(lambda a, d: a + eps * d, lora, direction))
    minus = loss_fn(jax.tree.map(lambda a, d: a - eps * d, lora, direction))
    numeric = (plus - minus) / (2 * eps)
    analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
    assert abs(float(numeric) - float(analytic)) <= 2e-3 * max(1.0, abs(float(analytic))), (numeric, analytic)


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_tiny_model_learns_to_emit_a_token(mode):
    """Reward = share of completion tokens equal to TARGET; GRPO must raise it, with a fixed seed."""
    target, b, g, c = 7, 4, 8, 8
    params = init_params(TINY, jax.random.key(0), std=0.2)
    opt = make_optimizer(OptimizerConfig(learning_rate=3e-2 if mode == "lora" else 1e-2, weight_decay=0.0), 100)
    if mode == "lora":
        trainable, frozen, scale = init_lora(TINY, LoraConfig(rank=4), jax.random.key(1)), params, 1.0
    else:
        trainable, frozen, scale = params, None, None
    state = TrainState(trainable, opt.init(trainable), jnp.int32(0))
    s = StepSettings(TINY, GRPOLossConfig(), lora_scale=scale, temperature=1.0, dtype="float32", remat=False)
    step = jit_train_step(opt, s)
    prompt = _tokens((b, 4), seed=9)
    pmask = jnp.ones((b, 4), bool)
    history = []
    for i in range(30):
        p, lora = (frozen, state.trainable) if mode == "lora" else (state.trainable, None)
        out = sample(p, TINY, prompt, pmask, jax.random.key(100 + i), params_sampling=SamplingParams(1.0),
                     num_samples=g, max_new_tokens=c, eos_ids=(1,), pad_id=0, lora=lora, lora_scale=scale or 1.0)
        hits = (out.tokens_BxGxC == target) & out.mask_BxGxC
        rewards = hits.sum(-1) / jnp.maximum(out.mask_BxGxC.sum(-1), 1)
        history.append(float(rewards.mean()))
        batch = RolloutBatch(prompt, pmask, out.tokens_BxGxC, out.mask_BxGxC, out.logprobs_BxGxC,
                             group_advantages(rewards.astype(jnp.float32)), ~out.stopped_BxG)
        state, _ = step(state, frozen, None, batch)
    start, end = np.mean(history[:3]), np.mean(history[-3:])
    assert end > start + 0.3, f"reward {start:.3f} -> {end:.3f}"


def test_shorter_half_of_the_completions_trains_on_a_narrower_bucket():
    """Running the shorter half of the completions at its own width, each row against its own prompt, gives
    the same log-probs, loss and gradient as running every row at the full width."""
    params = init_params(TINY, jax.random.key(0), std=0.2)
    lora = jax.tree.map(lambda a: a + 0.05, init_lora(TINY, LoraConfig(rank=2), jax.random.key(1)))
    rng = np.random.default_rng(3)
    b, g, c = 2, 4, 32
    lengths = np.array([[3, 30, 5, 32], [32, 9, 14, 2]])
    tokens = rng.integers(3, 64, (b, g, c)).astype(np.int32)
    prompts = np.asarray(_tokens((b, 5), seed=2))
    example = Example("x", [{"role": "user", "content": "q"}])
    groups = [[Episode.single_turn(example, prompts[i, 2 * i:], tokens[i, j, :n], np.full(n, -1.0), policy_version=0,
                                   finish_reason="length" if n == c else "stop")
               for j, n in enumerate(lengths[i])] for i in range(b)]  # prompt 1 is 3 tokens: 2 of padding
    batch = pack_groups(groups, rng.standard_normal((b, g)), pad_id=0, max_completion_tokens=c)
    assert batch.prompt_BxP.shape == (b, 32) and not batch.prompt_mask_BxP[1, :-3].any()
    short = short_completion_len(batch)
    assert short == 16  # the four shorter completions end within 9 tokens
    assert short_completion_len(batch, microbatches=2) == 16 and short_completion_len(batch._replace(
        completion_mask_BxGxC=jnp.ones((b, g, c), bool))) is None
    s = StepSettings(TINY, GRPOLossConfig(beta=0.0), lora_scale=1.0, temperature=1.0, dtype="float32", remat=False)
    whole = jax.value_and_grad(lambda tr: batch_loss(tr, params, None, batch, s)[0])(lora)
    split = jax.value_and_grad(lambda tr: batch_loss(tr, params, None, batch, s, short)[0])(lora)
    np.testing.assert_allclose(split[0], whole[0], rtol=1e-5)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6), split[1], whole[1])
    kw = dict(lora=lora, dtype=jnp.float32, remat=False, completion_mask_BxGxC=batch.completion_mask_BxGxC)
    full = completion_logprobs(params, TINY, batch.prompt_BxP, batch.prompt_mask_BxP, batch.completion_BxGxC, **kw)
    part = completion_logprobs(params, TINY, batch.prompt_BxP, batch.prompt_mask_BxP, batch.completion_BxGxC,
                               short_completion=short, **kw)
    m = np.asarray(batch.completion_mask_BxGxC)
    for x, y in zip(part, full):
        np.testing.assert_allclose(np.where(m, x, 0), np.where(m, y, 0), atol=1e-5)


def _batch_of_lengths(lengths_BxG, c: int, advantages_BxG, truncated_BxG=None, seed: int = 0) -> RolloutBatch:
    """A hand-made batch: completion (b, j) has lengths_BxG[b][j] real tokens, right-padded to width c."""
    lengths = np.asarray(lengths_BxG)
    b, g = lengths.shape
    tokens = _tokens((b, g, c), seed=seed)
    mask = jnp.asarray(np.arange(c)[None, None] < lengths[..., None])
    truncated = np.zeros((b, g), bool) if truncated_BxG is None else np.asarray(truncated_BxG)
    return RolloutBatch(_tokens((b, 5), seed=seed + 1), jnp.ones((b, 5), bool), jnp.where(mask, tokens, 0), mask,
                        jnp.where(mask, -1.0, 0.0), jnp.asarray(advantages_BxG, jnp.float32), jnp.asarray(truncated))


def test_dr_grpo_normaliser_is_a_constant_not_the_batch_width():
    """A token's weight in seq-mean-token-sum-norm is 1 / (L_norm · B·G) with L_norm the generation budget: it must
    not change when another group's completion grows and the batch's padded width goes from 16 to 32."""
    params = init_params(TINY, jax.random.key(0), std=0.2)
    lora = jax.tree.map(lambda a: a + 0.05, init_lora(TINY, LoraConfig(rank=2), jax.random.key(1)))
    loss_cfg = GRPOLossConfig(aggregation="seq-mean-token-sum-norm")
    s = StepSettings(TINY, loss_cfg, lora_scale=1.0, temperature=1.0, dtype="float32", max_new_tokens=32)
    adv = [[1.0, -1.0], [0.0, 0.0]]  # group 1 carries no loss, only width
    narrow = _batch_of_lengths([[3, 5], [4, 10]], 16, adv)
    wide = _batch_of_lengths([[3, 5], [4, 30]], 32, adv)
    # First pass r = 1, so loss = -Σ w·A = -(3·1 - 5·1) / (32 · 4) = 2 / 128, at either width.
    for batch in (narrow, wide):
        np.testing.assert_allclose(batch_loss(lora, params, None, batch, s)[0], 2 / 128, rtol=1e-6)
        np.testing.assert_allclose(batch_loss_weights(batch, s)[0, 0, 0], 1 / 128, rtol=1e-6)
    # An explicit L_norm wins; neither set is an error, not a silent fall back to the padded width.
    s_norm = StepSettings(TINY, GRPOLossConfig(aggregation="seq-mean-token-sum-norm", norm_length=64), 1.0, 1.0,
                          "float32", max_new_tokens=32)
    np.testing.assert_allclose(batch_loss(lora, params, None, narrow, s_norm)[0], 2 / 256, rtol=1e-6)
    with pytest.raises(ValueError, match="norm_length"):
        batch_loss(lora, params, None, narrow, StepSettings(TINY, loss_cfg, 1.0, 1.0, "float32"))


@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean"])
def test_accumulated_gradient_with_unequal_lengths_equals_the_full_batch_gradient(aggregation):
    """Two micro-batches of one group each. Micro-batch 0 has 3 + 5 + 4 loss tokens (its 6-token row is truncated
    and masked), micro-batch 1 has 12 + 16 + 9 + 16: token-mean per micro-batch would weight micro-batch 0's tokens
    1/12 instead of 1/65, and seq-mean-token-mean would count 3 and 4 sequences instead of 7."""
    params = init_params(TINY, jax.random.key(0), std=0.2)
    lora = jax.tree.map(lambda a: a + 0.05, init_lora(TINY, LoraConfig(rank=2), jax.random.key(1)))
    batch = _batch_of_lengths([[3, 5, 4, 6], [12, 16, 9, 16]], 16, [[0.5, -1.0, 1.5, -0.2], [-0.7, 1.2, 0.3, -1.1]],
                              truncated_BxG=[[False, False, False, True], [False, False, False, False]])
    loss_cfg = GRPOLossConfig(aggregation=aggregation, mask_truncated=True)
    full = StepSettings(TINY, loss_cfg, lora_scale=1.0, temperature=1.0, dtype="float32")
    split = StepSettings(TINY, loss_cfg, lora_scale=1.0, temperature=1.0, dtype="float32", microbatches=2)
    grads = {name: jax.jit(lambda tr, b, s=st: batch_gradients(tr, params, None, b, s))(lora, batch)
             for name, st in (("full", full), ("split", split))}
    (want, want_metrics), (got, got_metrics) = grads["full"], grads["split"]
    for g_want, g_got in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
        scale = float(np.abs(g_want).max())
        assert scale > 0
        np.testing.assert_allclose(g_got, g_want, rtol=1e-5, atol=1e-6 * scale)
    for name in ("actor/loss", "actor/pg_loss"):
        np.testing.assert_allclose(got_metrics[name], want_metrics[name], rtol=1e-5)
