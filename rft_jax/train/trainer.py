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

from rft_jax.data.reasoning import plan_reasoning
from rft_jax.grpo import TrainState, make_schedule, split_microbatches
from rft_jax.grpo.mismatch import mismatch_metrics
from rft_jax.grpo.optimizer import is_max_metric
from rft_jax.model.config import ModelConfig
from rft_jax.model.logprobs import completion_logprobs
from rft_jax.model.precision import storage_dtype
from rft_jax.model.registry import resolve_compute_dtype, resolve_logprob_impl
from rft_jax.parallel import place
from rft_jax.rollout.batch import RolloutBatch, advantages, pack_groups, shaped_rewards, short_completion_len
from rft_jax.rollout.dynamic import fill_with_signal
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
    old_logp_fn: Callable | None = None  # the training forward's log-probs (mu x mini-batches > 1)
    step_settings: StepSettings | None = None  # the jitted step's static settings

    @property
    def updates_per_step(self) -> int:
        """Optimizer updates in one RL step: mu passes x mini-batches."""
        return self.cfg.ppo_epochs * self.cfg.ppo_minibatches

    def rl_step(self, state: TrainState) -> int:
        """RL steps done: `state.step` counts optimizer updates, `updates_per_step` to an RL step."""
        return int(state.step) // self.updates_per_step

    def rollouts(self, state: TrainState, examples, key: jax.Array, ids=None) -> Rollouts:
        return collect(key=key, examples=examples, cfg=self.model_cfg, tokenizer=self.tokenizer, scorer=self.scorer,
                       settings=self.rollout_settings, mesh=self.mesh, policy_version=self.rl_step(state), ids=ids,
                       **self.policy.sampler_args(state))

    def update(self, state: TrainState, r: Rollouts, active_B=None) -> tuple[TrainState, dict[str, float]]:
        """Advantages, the packed batch, then `ppo_epochs` passes of one optimizer step per mini-batch.

        With more than one update per batch the ratio's "old" log-probs are the
        current policy's under the training forward, computed before the first
        pass: the sampler's own (top-k/top-p filtered, from a KV-cached decode
        whose rounding differs) would make the first pass's ratio differ from 1. The
        sampler's stay in the batch as the behaviour log-probs (`loss.off_policy`).
        The coupled objective takes its ratio against those, but the recompute is
        kept: it gives the `mismatch/*` and `off_policy/*` metrics. The metrics are
        the last update's; the learning rate is that of this RL step.
        """
        cfg = self.cfg
        max_new = cfg.sampling.max_new_tokens
        adv_BxG = advantages(r.groups, cfg.advantage, max_new)
        batch = pack_groups(r.groups, adv_BxG, pad_id=self.tokenizer.pad_id, max_completion_tokens=max_new,
                            active_B=active_B)
        lr = float(self.schedule(self.rl_step(state)))
        minibatches, mismatch = [], []
        for mb in split_groups(batch, cfg.ppo_minibatches):
            short = short_completion_len(mb, cfg.optimizer.grad_accum_steps)
            mb = place(mb.with_loss_mask(), self.shardings.batch)
            if self.old_logp_fn is not None:  # all of them before the first update
                recomputed = self.old_logp_fn(state.trainable, self.frozen, mb, short)
                mismatch.append(mismatch_metrics(recomputed, mb.old_logp_BxGxC, mb.loss_mask_BxGxC))
                mb = mb._replace(old_logp_BxGxC=recomputed, behaviour_logp_BxGxC=mb.old_logp_BxGxC)
            minibatches.append((mb, short))
        first_pass = []
        for epoch in range(cfg.ppo_epochs):
            for mb, short in minibatches:
                state, update_metrics = self.step_fn(state, self.frozen, self.reference, mb, short)
                first_pass += [update_metrics] if epoch == 0 else []
        shaped_BxG = shaped_rewards(r.groups, cfg.advantage, max_new)
        # With several updates the sampler-vs-trainer comparison is made here, on the recomputed log-probs; the
        # off-policy weights (the same on every pass) cover every mini-batch, not only the last.
        off_policy = [{k: v for k, v in m.items() if k.startswith("off_policy/")} for m in first_pass]
        return state, {**rollout_metrics(r, adv_BxG, shaped_BxG),
                       **{k: float(v) for k, v in update_metrics.items()}, **combine_metrics(mismatch),
                       **combine_metrics(off_policy), "actor/lr": lr}

    def step(self, state: TrainState, examples, key: jax.Array, ids=None,
             more: Callable[[int], tuple[list, list]] | None = None) -> tuple[TrainState, dict, Rollouts]:
        """Rollouts of `examples` with the current policy, then the update: one RL step.

        With dynamic sampling, `more(round)` gives (examples, prompt ids) of further prompts for
        groups whose rewards all agree (rft_jax/rollout/dynamic.py).
        """
        t0 = time.perf_counter()
        r = self.rollouts(state, examples, key, ids)
        active_B, extra = None, {}
        ds = self.cfg.dynamic_sampling
        if ds.enabled and more is not None:
            def more_rollouts(round_: int) -> Rollouts:
                ex, more_ids = more(round_)
                return self.rollouts(state, ex, jax.random.fold_in(key, 1000 + round_), more_ids)

            filled = fill_with_signal(r, more_rollouts, len(examples), ds.max_rounds)
            r, active_B, extra = filled.rollouts, filled.active_B, filled.metrics
        t1 = time.perf_counter()
        state, metrics = self.update(state, r, active_B)
        metrics.update(extra)
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
    wants_reference = cfg.loss.beta != 0 or cfg.kl_monitor_interval > 0
    reference = jax.tree.map(jnp.copy, params) if (cfg.mode == "full" and wants_reference) else None
    sh = step_shardings(mesh, optimizer, state, frozen, reference, cfg.batch_size // cfg.ppo_minibatches,
                        cfg.mode == "lora")
    state, frozen, reference = place((state, frozen, reference), (sh.state, sh.frozen, sh.reference))
    compute_dtype = resolve_compute_dtype(cfg.model.compute_dtype)
    settings = StepSettings(model_cfg, cfg.loss, cfg.lora.scale if cfg.mode == "lora" else None,
                            cfg.sampling.temperature, compute_dtype, cfg.optimizer.grad_accum_steps,
                            remat=cfg.model.remat, use_old_logp=cfg.ppo_epochs * cfg.ppo_minibatches > 1,
                            max_new_tokens=cfg.sampling.max_new_tokens,
                            logprob_impl=resolve_logprob_impl(cfg.model.logprob_impl), mesh=mesh)
    rollout_settings = RolloutSettings(cfg.sampling.params, cfg.sampling.samples_per_prompt,
                                       cfg.sampling.max_new_tokens, tuple(cfg.sampling.stop), compute_dtype,
                                       plan_reasoning(cfg.reasoning, tokenizer),
                                       cfg.agent if cfg.agent.enabled else None)
    trainer = Trainer(cfg, model_cfg, tokenizer, scorer, mesh, Policy(cfg, frozen, compute_dtype), frozen, reference,
                      sh, optimizer, jit_sharded_train_step(optimizer, settings, sh),
                      make_schedule(cfg.optimizer, steps), rollout_settings,
                      jit_old_logprobs(settings, sh) if settings.use_old_logp else None, settings)
    return trainer, state


def combine_metrics(parts: list[dict]) -> dict[str, float]:
    """Metrics of several mini-batches as one: maxima by max, the rest by mean (equal-sized mini-batches)."""
    if not parts or not parts[0]:
        return {}
    return {k: float((np.max if is_max_metric(k) else np.mean)([float(p[k]) for p in parts])) for k in parts[0]}


def split_groups(batch: RolloutBatch, n: int) -> list[RolloutBatch]:
    """The batch as `n` mini-batches of whole groups, in order."""
    size = batch.prompt_BxP.shape[0] // n
    return [jax.tree.map(lambda x, i=i: x[i * size:(i + 1) * size], batch) for i in range(n)]


def jit_old_logprobs(s: StepSettings, sh: StepShardings) -> Callable:
    """`(trainable, frozen, batch, short_completion) -> old_logp_BxGxC`: the policy's log-probs of the batch
    under the training forward (same dtype, temperature and micro-batches as the step), 0 off the loss mask."""
    lora_mode = s.lora_scale is not None

    def old_logprobs(trainable, frozen, batch: RolloutBatch, short_completion=None):
        params, lora = (frozen, trainable) if lora_mode else (trainable, None)

        def one(mb: RolloutBatch) -> jax.Array:
            logp, _ = completion_logprobs(params, s.model, mb.prompt_BxP, mb.prompt_mask_BxP, mb.completion_BxGxC,
                                          lora=lora, lora_scale=s.lora_scale or 1.0, temperature=s.temperature,
                                          dtype=jnp.dtype(s.dtype), remat=s.remat, implementation=s.logprob_impl,
                                          completion_mask_BxGxC=mb.completion_mask_BxGxC,
                                          short_completion=short_completion, mesh=s.mesh)
            return jnp.where(mb.loss_mask_BxGxC, logp, 0.0).astype(jnp.float32)

        if s.microbatches == 1:
            return one(batch)
        return jax.lax.map(one, split_microbatches(batch, s.microbatches)).reshape(batch.old_logp_BxGxC.shape)

    return jax.jit(old_logprobs, in_shardings=(sh.state.trainable, sh.frozen, sh.batch),
                   out_shardings=sh.batch.old_logp_BxGxC, static_argnums=(3,))


def batch_indices(step: int, batch_size: int, num: int, seed: int) -> np.ndarray:
    """The examples of a step: a pure function of the step, so resuming needs no data cursor."""
    per_epoch = num // batch_size
    epoch, pos = divmod(step, per_epoch)
    return np.random.default_rng([seed, epoch]).permutation(num)[pos * batch_size:(pos + 1) * batch_size]


def extra_indices(step: int, round_: int, batch_size: int, num: int, seed: int) -> np.ndarray:
    """Dynamic sampling's further prompts for a step's extra round: a pure function as well."""
    return np.random.default_rng([seed, step, round_]).permutation(num)[:batch_size]
