"""An SFT phase: a few passes of NLL on (prompt, target) pairs; used as RFT's warm start and by `rft-jax sft`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from rft_jax.grpo import OptimizerConfig, make_optimizer
from rft_jax.sft.demos import pack
from rft_jax.sft.step import SFTSettings, jit_sft_step
from rft_jax.train.step import TrainState


def train_sft(trainable: dict, frozen: dict | None, tokenizer, pairs: list[tuple[list[int], str]],
              settings: SFTSettings, *, steps: int, batch_size: int, learning_rate: float, seed: int,
              max_target_tokens: int = 256) -> tuple[dict, list[float]]:
    """Returns the trained pytree and the loss of every step."""
    if not pairs:
        raise ValueError("no SFT demonstrations: nothing to train on")
    optimizer = make_optimizer(OptimizerConfig(learning_rate=learning_rate, weight_decay=0.0), steps)
    state = TrainState(trainable, optimizer.init(trainable), jnp.int32(0))
    step_fn = jit_sft_step(optimizer, settings)
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(pairs)) for _ in range(steps * batch_size // len(pairs) + 1)])
    losses = []
    for step in tqdm(range(steps), desc="sft", leave=False):
        batch = [pairs[i] for i in order[step * batch_size:(step + 1) * batch_size]]
        arrays = [jnp.asarray(x) for x in pack(tokenizer, batch, max_target_tokens)]
        state, loss = step_fn(state, frozen, *arrays)
        losses.append(float(loss))
    return state.trainable, losses
