"""Every family through the training path, not only its forward: placed on a mesh by the rules table, and a
whole `rft-jax train` step for the families whose layers differ most (Gemma 3's post-norms and windows, a
mixture of experts with its load-balancing loss).

A family's parity tests call the forward directly; the trainer also places every parameter by name
(rft_jax/parallel/rules.py), and a tensor without a rule stopped Gemma 3 there before any step ran.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import pytest

from rft_jax.checkpoint.export import export_model
from rft_jax.model import init_params
from rft_jax.model.config import config_from_hf
from rft_jax.model.families import FAMILIES
from rft_jax.model.lora import LoraConfig, init_lora
from rft_jax.parallel.mesh import MeshConfig, make_mesh
from rft_jax.parallel.rules import lora_shardings, param_shardings
from rft_jax.train.loop import run
from tests.hf_tiny import _tiny_config
from tests.test_train_run import tiny_config

KINDS = ("llama", "qwen2", "qwen3", "mistral", "gemma3", "qwen3_moe", "mixtral")


def _config(kind: str, vocab: int | None = None):
    hf = _tiny_config(kind, False, {}, 4).to_dict()
    if vocab:
        hf["vocab_size"] = vocab
    return config_from_hf(hf)


def test_the_list_covers_every_registered_family():
    assert set(KINDS) == set(FAMILIES)


@pytest.mark.parametrize("kind", KINDS)
def test_every_parameter_of_every_family_has_a_place_on_the_mesh(kind):
    """Base weights and (for dense MLPs, every projection; for experts, attention) adapters."""
    cfg = _config(kind)
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    params = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    placed = param_shardings(params, mesh)
    assert jax.tree.structure(placed) == jax.tree.structure(params)
    targets = ("q", "k", "v", "o") if cfg.num_experts else LoraConfig().targets
    lora = jax.eval_shape(lambda: init_lora(cfg, LoraConfig(rank=4, targets=targets), jax.random.key(1)))
    assert jax.tree.structure(lora_shardings(lora, mesh)) == jax.tree.structure(lora)


# The mixture's run is slow (45 s): its placement is above and its step's loss in tests/test_model_moe.py.
@pytest.mark.parametrize("kind,mode", [("gemma3", "lora"), pytest.param("qwen3_moe", "full", marks=pytest.mark.slow)])
def test_one_training_step_of_the_most_different_families(kind, mode, smollm2, tmp_path):
    """A whole run (preflight, sharded step, sampler, evaluation, export) of one RL step; the mixture of
    experts with the load-balancing loss on, which the step logs."""
    _, _, tokenizer = smollm2
    cfg = _config(kind, vocab=tokenizer.vocab_size)
    model = tmp_path / "model"
    export_model(model, cfg, init_params(cfg, jax.random.key(0), std=0.3), tokenizer)
    train = tiny_config(str(model), str(tmp_path / "run"), max_steps=1, mode=mode)
    if kind == "qwen3_moe":
        train = dataclasses.replace(train, model=dataclasses.replace(train.model, router_aux_loss_coef=0.01),
                                    lora=dataclasses.replace(train.lora, targets=("q", "k", "v", "o")))
    run(train)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "actor/loss" in r]
    assert steps and all(v == v for v in (steps[-1]["actor/loss"],))  # a finite loss was logged
    assert ("actor/router_aux_loss" in steps[-1]) == (kind == "qwen3_moe")
    assert (tmp_path / "run" / "export" / "model" / "config.json").is_file()
