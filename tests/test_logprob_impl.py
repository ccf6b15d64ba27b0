"""`model.logprob_impl` picks the loss's log-prob kernel: the train step and SFT run the one named, a kernel
that cannot run on this backend fails before anything is compiled, and the accelerator set-ups pin the JAX
of requirements.txt."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import typing
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.fused_logprob import api
from rft_jax.data.example import Example
from rft_jax.model import init_params
from rft_jax.model.registry import ModelSpec, resolve_logprob_impl
from rft_jax.monitoring import names
from rft_jax.parallel import MeshConfig, make_mesh
from rft_jax.sft.step import SFTSettings, sft_loss
from rft_jax.train.hooks import StepContext
from rft_jax.train.kl_monitor import kl_monitor_hook
from rft_jax.train.trainer import build_trainer
from tests.test_trainer_knobs import TINY, _ByteTokenizer, _config, _LengthReward

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def kernels_called(monkeypatch) -> list[str]:
    """The names of the fused_logprob implementations traced from now on."""
    called: list[str] = []

    def recording(name, fn):
        def wrapped(*args, **kwargs):
            called.append(name)
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(api, "IMPLEMENTATIONS", {name: (recording(name, fn), backends)
                                                 for name, (fn, backends) in api.IMPLEMENTATIONS.items()})
    return called


def _one_step_and_kl_monitor(choice: str) -> dict:
    """One RL step of two PPO passes (so the old log-probs are recomputed), then the KL monitor on it."""
    cfg = _config(model=ModelSpec(name="unused", compute_dtype="float32", logprob_impl=choice), ppo_epochs=2)
    mesh = make_mesh(MeshConfig(1, 1, 1), devices=jax.devices()[:1])
    trainer, state = build_trainer(cfg, TINY, init_params(TINY, jax.random.key(0), std=0.3), _ByteTokenizer(),
                                   _LengthReward(), mesh, steps=2)
    examples = [Example(f"e{i}", [{"role": "user", "content": "x" * (i + 2)}]) for i in range(2)]
    state, metrics, rollouts = trainer.step(state, examples, jax.random.key(3))
    kl_monitor_hook(trainer, every=1).fn(StepContext(1, 2, state, metrics, rollouts))
    return metrics


def test_the_train_step_and_kl_monitor_run_the_named_kernel_and_agree(kernels_called):
    by_choice = {}
    for choice in ("reference", "xla_chunked"):  # "auto" -> xla_chunked here: test_each_backend_maps_...
        kernels_called.clear()
        by_choice[choice] = _one_step_and_kl_monitor(choice)
        assert set(kernels_called) == {choice}
        assert names.REF_KL in by_choice[choice]
    for key in ("actor/loss", "actor/entropy", names.REF_KL):
        np.testing.assert_allclose(by_choice["reference"][key], by_choice["xla_chunked"][key], rtol=1e-5, atol=1e-6)


def test_sft_runs_the_named_kernel(kernels_called):
    params = init_params(TINY, jax.random.key(0), std=0.3)
    prompt, target = jnp.array([[2, 5, 6]]), jnp.array([[7, 8, 1]])
    ones = jnp.ones_like
    losses = [sft_loss(params, None, prompt, ones(prompt, bool), target, ones(target, bool),
                       SFTSettings(TINY, None, logprob_impl=name)) for name in ("reference", "xla_chunked")]
    assert kernels_called == ["reference", "xla_chunked"]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-6)


def test_a_kernel_that_cannot_run_here_fails_before_compute():
    assert jax.default_backend() == "cpu"
    with pytest.raises(ValueError, match="logprob_impl='pallas'.*cpu") as err:
        build_trainer(_config(model=ModelSpec(name="unused", logprob_impl="pallas")), TINY,
                      init_params(TINY, jax.random.key(0)), _ByteTokenizer(), _LengthReward(),
                      make_mesh(MeshConfig(1, 1, 1), devices=jax.devices()[:1]), steps=2)
    assert "xla_chunked" in str(err.value)  # the fix is named


@pytest.mark.parametrize("backend, choice, want", [
    ("gpu", "pallas", "pallas_gpu"), ("tpu", "pallas", "pallas_tpu"), ("gpu", "auto", "xla_chunked"),
    ("tpu", "auto", "xla_chunked"), ("cpu", "auto", "xla_chunked"), ("tpu", "reference", "reference")])
def test_each_backend_maps_the_choice_to_its_kernel(monkeypatch, backend, choice, want):
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    assert resolve_logprob_impl(choice) == want


def test_the_choices_are_the_configs():
    choices = typing.get_args(typing.get_type_hints(ModelSpec)["logprob_impl"])
    assert set(choices) == {"auto", "reference", "xla_chunked", "pallas"} and ModelSpec().logprob_impl == "auto"


@pytest.mark.parametrize("target, extra", [("setup-gpu", "cuda12"), ("setup-gpu CUDA=13", "cuda13"),
                                           ("setup-tpu", "tpu")])
def test_accelerator_setups_pin_the_jax_of_requirements(target, extra):
    pinned = re.search(r"^jax==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    dry = subprocess.run(["make", "-n", *target.split()], cwd=ROOT, capture_output=True, text=True, check=True)
    assert f'"jax[{extra}]=={pinned}"' in dry.stdout
    assert extra in importlib.metadata.metadata("jax").get_all("Provides-Extra")  # the extra exists
    assert importlib.metadata.version("jax") == pinned
