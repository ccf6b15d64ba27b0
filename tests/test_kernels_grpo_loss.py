"""Fused GRPO loss (kernels/grpo_loss): every backend against the pure-jnp loss, value and gradient.

Tolerances: float32 inputs, value and gradient to 1e-5 relative (only the
summation order differs). bfloat16 inputs: both sides compute in float32 from
the same bf16 values, so the value agrees to 1e-5; the gradient is returned in
bf16 and agrees to 1e-2 relative (one bf16 rounding, 2⁻⁷ = 0.8%).
"""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.grpo_loss import BlockSizes, LossParams, api
from rft_jax.grpo import GRPOLossConfig, grpo_loss

# 3 x 37 = 111 tokens in blocks of 32: the last block is partial.
B, C = 3, 37
SMALL = BlockSizes(chunk_n=32, pallas_block_n=32)
BACKENDS = {
    "reference": dict(implementation="reference"),
    "xla_chunked": dict(implementation="xla_chunked"),
    "pallas_interpret": dict(implementation="pallas_gpu", interpret=True),
}


def _inputs(dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)
    logp = -rng.random((B, C)) * 3
    as_dtype = lambda x: jnp.asarray(x, jnp.float32).astype(dtype)  # noqa: E731
    return dict(
        logp_BxC=as_dtype(logp),
        old_logp_BxC=as_dtype(logp + rng.normal(size=(B, C)) * 0.3),  # ratios on both sides of the clip
        ref_logp_BxC=as_dtype(logp + rng.normal(size=(B, C)) * 0.3),
        advantages_B=jnp.asarray(rng.normal(size=B), jnp.float32),
        mask_BxC=jnp.asarray(rng.random((B, C)) > 0.25),
        entropy_BxC=jnp.asarray(rng.random((B, C)) * 2, jnp.float32),
        truncated_B=jnp.array([False, True, False]),
    )


CONFIGS = {
    "k3_token_mean": GRPOLossConfig(beta=0.1),
    "k1_seq_mean": GRPOLossConfig(beta=0.2, kl_estimator="k1", aggregation="seq-mean-token-mean"),
    "k2_sum_norm": GRPOLossConfig(beta=0.3, kl_estimator="k2", aggregation="seq-mean-token-sum-norm", norm_length=50),
    "no_ref": GRPOLossConfig(),
    "entropy_truncated": GRPOLossConfig(beta=0.1, entropy_coef=0.01, mask_truncated=True),
}


def _loss_args(inputs, cfg):
    """Split test inputs into (logp, positional args, keyword args) for a grpo_loss-like call."""
    inputs = dict(inputs)
    if cfg.beta == 0.0:
        inputs.pop("ref_logp_BxC")
    if cfg.entropy_coef == 0.0:
        inputs.pop("entropy_BxC")
    logp = inputs.pop("logp_BxC")
    return logp, [inputs.pop(k) for k in ("old_logp_BxC", "advantages_B", "mask_BxC")], inputs


def _all_value_and_grads(inputs, cfg, backends):
    """((loss, metrics), grad) of the pure loss and of each backend, from ONE jit (compiles dominate on CPU)."""

    def run(inputs):
        logp, args, kwargs = _loss_args(inputs, cfg)

        def vg(fn, **kw):
            return jax.value_and_grad(lambda lp: fn(lp, *args, cfg, **kwargs, **kw), has_aux=True)(logp)

        return vg(grpo_loss), {b: vg(api.grpo_loss, block=SMALL, **BACKENDS[b]) for b in backends}

    return jax.jit(run)(inputs)


def _assert_close(got, want, rtol=1e-5, grad_rtol=1e-5):
    (loss, metrics), grad = got
    (want_loss, want_metrics), want_grad = want
    np.testing.assert_allclose(loss, want_loss, rtol=rtol, atol=1e-6)
    assert sorted(metrics) == sorted(want_metrics)
    for k in metrics:
        np.testing.assert_allclose(metrics[k], want_metrics[k], rtol=rtol, atol=1e-6, err_msg=k)
    assert grad.dtype == want_grad.dtype
    np.testing.assert_allclose(grad.astype(jnp.float32), want_grad.astype(jnp.float32), rtol=grad_rtol, atol=1e-6)


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_value_and_grad_match_pure_loss(config):
    # The flat `reference` backend is checked against these two in test_flat_token_counts.
    want, got = _all_value_and_grads(_inputs(), CONFIGS[config], ["xla_chunked", "pallas_interpret"])
    for backend in got:
        _assert_close(got[backend], want)


def test_bf16_inputs():
    backends = ["xla_chunked", "pallas_interpret"]
    want, got = _all_value_and_grads(_inputs(jnp.bfloat16), CONFIGS["k3_token_mean"], backends)
    for backend in got:
        _assert_close(got[backend], want, rtol=1e-5, grad_rtol=1e-2)


def test_flat_token_counts():
    """N smaller than and a multiple of the block (32); the B x C tests cover a partial last block."""
    cfg = GRPOLossConfig(beta=0.1)

    def flat_inputs(n):
        rng = np.random.default_rng(n)
        logp_N = jnp.asarray(-rng.random(n), jnp.float32)
        old_N, ref_N = logp_N + 0.3 * jnp.asarray(rng.normal(size=(2, n)), jnp.float32)
        valid_N = jnp.asarray(rng.random(n) > 0.2, jnp.float32)
        weight_N = valid_N / jnp.maximum(valid_N.sum(), 1.0)
        return logp_N, (old_N, jnp.asarray(rng.normal(size=n), jnp.float32), weight_N, valid_N, ref_N)

    def run(per_n):
        out = {}
        for n, (logp_N, rest) in per_n.items():
            for b in ["reference", "xla_chunked", "pallas_interpret"]:
                f = lambda lp, rest=rest, b=b: api.grpo_token_loss(lp, *rest, cfg=cfg, block=SMALL, **BACKENDS[b])  # noqa: E731
                out[n, b] = jax.value_and_grad(f, has_aux=True)(logp_N)
        return out

    out = jax.jit(run)({n: flat_inputs(n) for n in (1, 64)})
    for (n, b), ((loss, sums), grad) in out.items():
        (want_loss, want_sums), want_grad = out[n, "reference"]
        np.testing.assert_allclose(loss, want_loss, rtol=1e-5, atol=1e-7, err_msg=f"{n=} {b}")
        for k in want_sums:
            np.testing.assert_allclose(sums[k], want_sums[k], rtol=1e-5, atol=1e-6, err_msg=f"{n=} {b} {k}")
        np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-7, err_msg=f"{n=} {b}")


def test_masked_tokens_with_garbage_values():
    """-inf log-probs on padding must not leak NaN into the loss or the gradient."""
    inputs = _inputs()
    dirty = dict(inputs, logp_BxC=jnp.where(inputs["mask_BxC"], inputs["logp_BxC"], -jnp.inf))
    want, got = _all_value_and_grads(dirty, CONFIGS["k3_token_mean"], ["xla_chunked", "pallas_interpret"])
    assert np.isfinite(want[0][0])
    for backend in got:
        _assert_close(got[backend], want)
        assert np.all(np.asarray(got[backend][1])[~np.asarray(inputs["mask_BxC"])] == 0.0)


def test_dispatch_never_falls_back():
    cfg = GRPOLossConfig()
    logp, args, kwargs = _loss_args(_inputs(), cfg)
    call = lambda **kw: api.grpo_loss(logp, *args, cfg, **kw)  # noqa: E731
    if jax.default_backend() != "gpu":
        assert api.best_implementation() == "xla_chunked"
        with pytest.raises(RuntimeError, match="needs a GPU"):
            call(implementation="pallas_gpu")
    with pytest.raises(ValueError, match="unknown implementation"):
        call(implementation="cuda")
    with pytest.raises(ValueError, match="interpret"):
        call(implementation="xla_chunked", interpret=True)


def test_loss_params_from_config():
    cfg = CONFIGS["k2_sum_norm"]
    params = LossParams.from_config(cfg)
    assert (params.beta, params.kl_estimator, params.aggregation, params.norm_length) == (0.3, "k2", cfg.aggregation, 50)
    assert LossParams.from_config(params) is params
    with pytest.raises(ValueError, match="kl_estimator"):
        LossParams(kl_estimator="k4")


def test_kernels_never_import_rft_jax():
    """kernels/ is a leaf: rft_jax may import it, never the other way round."""
    code = ("import sys, kernels.layout, kernels.fused_logprob, kernels.grpo_loss; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'rft_jax'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_pallas_kernel_lowers_to_triton_without_a_gpu():
    """Cross-lowers for CUDA on this CPU machine: checks block shapes and ops are Triton-legal."""
    from kernels.grpo_loss import pallas_gpu

    n = 3000
    f32 = jax.ShapeDtypeStruct((n,), jnp.float32)
    logp = jax.ShapeDtypeStruct((n,), jnp.bfloat16)

    def fn(lp, *rest):
        return jax.grad(lambda x: pallas_gpu.grpo_token_loss(x, *rest, LossParams(beta=0.1), BlockSizes())[0])(lp)

    hlo = jax.jit(fn).trace(logp, f32, f32, f32, f32, f32).lower(lowering_platforms=("cuda",)).as_text()
    assert "xla.gpu.triton" in hlo


@pytest.mark.gpu  # skipped without a GPU by tests/conftest.py
def test_pallas_on_gpu_at_full_size():
    rng = np.random.default_rng(0)
    b, c = 64, 4096  # 262k tokens
    logp = -jnp.asarray(rng.random((b, c)) * 3, jnp.float32)
    inputs = dict(
        old_logp_BxC=logp + jnp.asarray(rng.normal(size=(b, c)) * 0.3, jnp.float32),
        ref_logp_BxC=logp + jnp.asarray(rng.normal(size=(b, c)) * 0.3, jnp.float32),
        advantages_B=jnp.asarray(rng.normal(size=b), jnp.float32),
        mask_BxC=jnp.asarray(rng.random((b, c)) > 0.1),
    )
    cfg = GRPOLossConfig(beta=0.1)
    args = [inputs[k] for k in ("old_logp_BxC", "advantages_B", "mask_BxC")]
    vg = lambda fn, **kw: jax.jit(jax.value_and_grad(  # noqa: E731
        lambda lp: fn(lp, *args, cfg, ref_logp_BxC=inputs["ref_logp_BxC"], **kw), has_aux=True))(logp)
    _assert_close(vg(api.grpo_loss, implementation="pallas_gpu"), vg(grpo_loss), rtol=1e-4, grad_rtol=1e-5)


def test_kernel_refuses_loss_settings_it_does_not_compute():
    """A GSPO/CISPO/SAPO or dual-clip config must not silently run as plain PPO-clip in the kernel."""
    from kernels.grpo_loss.params import LossParams  # noqa: PLC0415

    assert LossParams.from_config(GRPOLossConfig()).epsilon_high == GRPOLossConfig().epsilon_high
    for bad in (dict(policy_loss="gspo"), dict(clip_ratio_c=3.0)):
        with pytest.raises(ValueError, match="ppo_clip"):
            LossParams.from_config(GRPOLossConfig(**bad))
