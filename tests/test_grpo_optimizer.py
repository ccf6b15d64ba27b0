"""Learning-rate schedules by hand, one AdamW step by hand, and gradient accumulation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rft_jax.grpo import OptimizerConfig, accumulate_gradients, make_optimizer, make_schedule, split_microbatches


@pytest.mark.parametrize(
    "cfg, expected",
    [
        # warmup 4: step s uses (s+1)/4 of the peak, so step 0 already learns.
        (OptimizerConfig(learning_rate=1e-3, warmup_steps=4), {0: 2.5e-4, 2: 7.5e-4, 3: 1e-3, 100: 1e-3}),
        (OptimizerConfig(learning_rate=1e-3), {0: 1e-3, 13: 1e-3}),
        # cosine over the 10 post-warmup steps down to 0.1·η: halfway (step 9) is 0.1 + 0.9·0.5 = 0.55.
        (
            OptimizerConfig(learning_rate=1e-3, warmup_steps=4, schedule="cosine", min_lr_ratio=0.1),
            {0: 2.5e-4, 3: 1e-3, 4: 1e-3, 9: 5.5e-4, 14: 1e-4, 20: 1e-4},
        ),
    ],
)
def test_schedule_values(cfg, expected):
    schedule = make_schedule(cfg, total_steps=14)
    for step, lr in expected.items():
        np.testing.assert_allclose(schedule(step), lr, rtol=1e-5, err_msg=f"step {step}")


def test_one_adamw_step_by_hand():
    # Adam's first step moves each coordinate by η·sign(g) (clipping does not change signs);
    # decoupled decay η·λ·p applies to the matrix only.
    cfg = OptimizerConfig(learning_rate=0.1, weight_decay=0.5, max_grad_norm=1.0)
    params = {"w": jnp.array([[3.0, 4.0]]), "b": jnp.array([1.0])}
    grads = {"w": jnp.array([[30.0, 40.0]]), "b": jnp.array([-10.0])}
    opt = make_optimizer(cfg, total_steps=10)
    updates, _ = opt.update(grads, opt.init(params), params)
    new = jax.tree.map(lambda p, u: p + u, params, updates)
    np.testing.assert_allclose(new["w"], [[3 - 0.1 * (1 + 1.5), 4 - 0.1 * (1 + 2.0)]], rtol=1e-5)
    np.testing.assert_allclose(new["b"], [1.1], rtol=1e-5)


def test_accumulated_gradient_equals_full_batch_gradient():
    rng = np.random.default_rng(0)
    batch = {"x": jnp.asarray(rng.normal(size=(8, 3)), jnp.float32), "y": jnp.asarray(rng.normal(size=8), jnp.float32)}
    params = {"w": jnp.array([0.5, -1.0, 2.0])}

    def loss_fn(p, b):
        err = b["x"] @ p["w"] - b["y"]
        return jnp.mean(err**2), {"loss": jnp.mean(err**2)}

    def grad_fn(p, b):
        grads, metrics = jax.grad(loss_fn, has_aux=True)(p, b)
        return grads, metrics

    grads, metrics = jax.jit(lambda p, mb: accumulate_gradients(grad_fn, p, mb))(params, split_microbatches(batch, 4))
    full_grads, full_metrics = grad_fn(params, batch)
    np.testing.assert_allclose(grads["w"], full_grads["w"], rtol=1e-5)
    np.testing.assert_allclose(metrics["loss"], full_metrics["loss"], rtol=1e-5)

    # bf16 parameters: summed in f32, returned in the dtype grad_fn gives (bf16 here).
    loss16 = lambda p, b: loss_fn(jax.tree.map(lambda q: q.astype(jnp.float32), p), b)  # noqa: E731
    bf16 = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
    grad16_fn = jax.grad(loss16, has_aux=True)
    grads16, _ = accumulate_gradients(grad16_fn, bf16, split_microbatches(batch, 4))
    assert grads16["w"].dtype == jnp.bfloat16
    np.testing.assert_allclose(grads16["w"].astype(jnp.float32), full_grads["w"], rtol=2e-2)

    with pytest.raises(ValueError):
        split_microbatches(batch, 3)


def test_accumulated_maxima_are_maxima_and_the_rest_means():
    import jax.numpy as jnp  # noqa: PLC0415

    from rft_jax.grpo.optimizer import accumulate_gradients  # noqa: PLC0415

    def grad_fn(params, mb):
        return {"w": params["w"] * mb}, {"off_policy/is_ratio_max": mb, "mismatch/max_abs_logp_diff": 2 * mb,
                                         "actor/pg_loss": mb}

    _, metrics = accumulate_gradients(grad_fn, {"w": jnp.ones(())}, jnp.array([1.0, 5.0, 3.0]))
    assert float(metrics["off_policy/is_ratio_max"]) == 5.0 and float(metrics["mismatch/max_abs_logp_diff"]) == 10.0
    assert float(metrics["actor/pg_loss"]) == 3.0
