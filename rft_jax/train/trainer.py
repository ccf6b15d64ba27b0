"""One RL step as `rft-jax train` runs it and `benchmarks/grpo_step.py` times it.

A step: rollouts of a batch of prompts (sample, score) on the run's mesh, then
advantages, packing, and the sharded jitted update. The loop and the benchmark
both call `Trainer.step`, so the figure the benchmark prints is the path users run.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from rft_jax.grpo import TrainState, make_schedule
from rft_jax.model.config import ModelConfig
from rft_jax.model.precision import storage_dtype
from rft_jax.model.registry import resolve_compute_dtype
from rft_jax.parallel import place
from rft_jax.rollout.batch import advantages, pack_groups, short_completion_len
from rft_jax.rollout.engine import Rollouts, RolloutSettings, collect
from rft_jax.rollout.metrics import rollout_metrics
from rft_jax.train import setup
from rft_jax.train.config import TrainConfig
from rft_jax.train.sharded_step import StepShardings, jit_sharded_train_step, step_shardings
from rft_jax.train.step import StepSettings


class Policy:
    """The current policy's parameters in the form the sampler and evaluation want."""

    def __init__(self, cfg: TrainConfig, frozen_or_none, compute_dtype):
        self.cfg, self.dtype = cfg, jnp.dtype(compute_dtype)
        # LoRA: the base never changes, so its copy in the storage dtype (bf16 on accelerators) is made once.
        self.base = None if frozen_or_none is None else jax.tree.map(lambda x: x.astype(storage_dtype(self.dtype)),
                                                                      frozen_or_none)

    def sampler_args(self, state: TrainState) -> dict:
        if self.cfg.mode == "lora":
            return dict(params=self.base, lora=state.trainable, lora_scale=self.cfg.lora.scale)
        stored = storage_dtype(self.dtype)
        return dict(params=jax.tree.map(lambda x: x.astype(stored), state.trainable), lora=None, lora_scale=1.0)


@dataclasses.dataclass
class Trainer:
    """The pieces of a step that stay fixed over a run."""

    cfg: TrainConfig
    model_cfg: ModelConfig
    tokenizer: object
    scorer: object
    mesh: Mesh
    policy: Policy
    frozen: dict | None  # the LoRA base
    reference: dict | None  # the KL reference of full fine-tuning
    shardings: StepShardings
    optimizer: optax.GradientTransformation
    step_fn: Callable
    schedule: Callable
    rollout_settings: RolloutSettings

    def rollouts(self, state: TrainState, examples, key: jax.Array, ids=None) -> Rollouts:
        return collect(key=key, examples=examples, cfg=self.model_cfg, tokenizer=self.tokenizer, scorer=self.scorer,
                       settings=self.rollout_settings, mesh=self.mesh, policy_version=int(state.step), ids=ids,
                       **self.policy.sampler_args(state))

    def update(self, state: TrainState, r: Rollouts) -> tuple[TrainState, dict[str, float]]:
        """Advantages, the packed batch, and `ppo_epochs` optimizer steps on it."""
        cfg = self.cfg
        adv_BxG = advantages(r.groups, cfg.advantage, cfg.sampling.max_new_tokens)
        batch = pack_groups(r.groups, adv_BxG, pad_id=self.tokenizer.pad_id,
                            max_completion_tokens=cfg.sampling.max_new_tokens)
        short = short_completion_len(batch, cfg.optimizer.grad_accum_steps)
        batch = place(batch, self.shardings.batch)
        lr = float(self.schedule(int(state.step)))
        for _ in range(cfg.ppo_epochs):
            state, update_metrics = self.step_fn(state, self.frozen, self.reference, batch, short)
        return state, {**rollout_metrics(r, adv_BxG), **{k: float(v) for k, v in update_metrics.items()},
                       "actor/lr": lr}

    def step(self, state: TrainState, examples, key: jax.Array, ids=None) -> tuple[TrainState, dict, Rollouts]:
        """Rollouts of `examples` with the current policy, then the update: one RL step."""
        t0 = time.perf_counter()
        r = self.rollouts(state, examples, key, ids)
        t1 = time.perf_counter()
        state, metrics = self.update(state, r)
        t2 = time.perf_counter()
        tokens = int(r.lengths_BxG.sum()) + int(r.prompt_lengths_B.sum())
        metrics.update({"timing_s/generate": r.timing["generate"], "timing_s/reward": r.timing["reward"],
                        "timing_s/update": t2 - t1, "timing_s/step": t2 - t0, "perf/tokens_per_s": tokens / (t2 - t0)})
        return state, metrics, r


def build_trainer(cfg: TrainConfig, model_cfg: ModelConfig, params: dict, tokenizer, scorer, mesh: Mesh,
                  steps: int) -> tuple[Trainer, TrainState]:
    """The trainer and the initial train state, placed on `mesh`."""
    state, frozen, optimizer = setup.init_state(cfg, model_cfg, params, steps)
    # A copy: the donated train state must not share buffers with the reference.
    reference = jax.tree.map(jnp.copy, params) if (cfg.mode == "full" and cfg.loss.beta != 0) else None
    sh = step_shardings(mesh, optimizer, state, frozen, reference, cfg.batch_size, cfg.mode == "lora")
    state, frozen, reference = place((state, frozen, reference), (sh.state, sh.frozen, sh.reference))
    compute_dtype = resolve_compute_dtype(cfg.model.compute_dtype)
    settings = StepSettings(model_cfg, cfg.loss, cfg.lora.scale if cfg.mode == "lora" else None,
                            cfg.sampling.temperature, compute_dtype, cfg.optimizer.grad_accum_steps,
                            remat=cfg.model.remat, use_old_logp=cfg.ppo_epochs > 1)
    rollout_settings = RolloutSettings(cfg.sampling.params, cfg.sampling.samples_per_prompt,
                                       cfg.sampling.max_new_tokens, tuple(cfg.sampling.stop), compute_dtype)
    trainer = Trainer(cfg, model_cfg, tokenizer, scorer, mesh, Policy(cfg, frozen, compute_dtype), frozen, reference,
                      sh, optimizer, jit_sharded_train_step(optimizer, settings, sh),
                      make_schedule(cfg.optimizer, steps), rollout_settings)
    return trainer, state


def batch_indices(step: int, batch_size: int, num: int, seed: int) -> np.ndarray:
    """The examples of a step: a pure function of the step, so resuming needs no data cursor."""
    per_epoch = num // batch_size
    epoch, pos = divmod(step, per_epoch)
    return np.random.default_rng([seed, epoch]).permutation(num)[pos * batch_size:(pos + 1) * batch_size]
