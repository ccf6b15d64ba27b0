"""The GRPO train step jitted with explicit in/out shardings and the state donated.

Same function as `rft_jax.train.step.train_step`; only where its inputs and
outputs live is fixed here, and the compiler partitions the rest (GSPMD).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import optax
from jax.sharding import Mesh

from rft_jax.grpo import TrainState
from rft_jax.parallel.rules import batch_shardings, lora_shardings, opt_state_shardings, param_shardings, replicated
from rft_jax.rollout.batch import RolloutBatch
from rft_jax.train.step import StepSettings, train_step


class StepShardings(NamedTuple):
    """Where each argument of the train step lives."""

    state: TrainState
    frozen: Any  # base parameters (LoRA) or None
    reference: Any  # reference parameters (full fine-tuning with beta != 0) or None
    batch: RolloutBatch
    mesh: Mesh


def step_shardings(mesh: Mesh, optimizer: optax.GradientTransformation, state: TrainState, frozen, reference,
                   batch_size: int, lora_mode: bool) -> StepShardings:
    """Shardings of the step's arguments for a batch of `batch_size` prompts (arrays or ShapeDtypeStructs)."""
    trainable = lora_shardings(state.trainable, mesh) if lora_mode else param_shardings(state.trainable, mesh)
    state_sh = TrainState(trainable, opt_state_shardings(optimizer, state.opt_state, trainable, mesh),
                          replicated(mesh))
    shapes = RolloutBatch(*(jax.ShapeDtypeStruct((batch_size,) + (1,) * n, "float32")
                            for n in (1, 1, 2, 2, 2, 1, 1, 2, 2)))
    return StepShardings(state_sh, None if frozen is None else param_shardings(frozen, mesh),
                         None if reference is None else param_shardings(reference, mesh),
                         batch_shardings(shapes, mesh), mesh)


def jit_sharded_train_step(optimizer: optax.GradientTransformation, settings: StepSettings, sh: StepShardings):
    """`train_step` with its inputs and outputs pinned to `sh` and the state's buffers reused for the new state."""
    def step(state, frozen, reference, batch, short_completion=None):
        return train_step(state, frozen, reference, batch, optimizer, settings, short_completion)

    jitted = jax.jit(step, in_shardings=(sh.state, sh.frozen, sh.reference, sh.batch),
                     out_shardings=(sh.state, replicated(sh.mesh)), donate_argnums=(0,), static_argnums=(4,))

    def call(state, frozen, reference, batch: RolloutBatch, short_completion=None):
        return jitted(state, frozen, reference, batch.with_loss_mask(), short_completion)

    call.jitted = jitted
    return call
