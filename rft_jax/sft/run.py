"""An SFT phase: a few passes of NLL on (prompt, target) pairs; used as RFT's warm start and by `rft-jax sft`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from rft_jax.grpo import OptimizerConfig, TrainState, make_optimizer
from rft_jax.sft.config import SFTConfig
from rft_jax.sft.demos import pack, pairs_from_examples
from rft_jax.sft.step import SFTSettings, jit_sft_step


def train_sft(trainable: dict, frozen: dict | None, tokenizer, pairs: list[tuple[list[int], str]],
              settings: SFTSettings, *, steps: int, batch_size: int, learning_rate: float, seed: int,
              max_target_tokens: int = 256) -> tuple[TrainState, list[float]]:
    """Returns the final train state (trained pytree, optimizer state, step) and the loss of every step."""
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
    return state, losses


def run_sft(cfg: SFTConfig) -> list[float]:
    """`rft-jax sft`: trains, then writes config.json, a checkpoint and the export as an RFT run does."""
    from rft_jax.checkpoint.export import export_run  # noqa: PLC0415
    from rft_jax.checkpoint.store import RunCheckpoints  # noqa: PLC0415
    from rft_jax.data import load_dataset  # noqa: PLC0415
    from rft_jax.model import load_model  # noqa: PLC0415
    from rft_jax.model.lora import init_lora  # noqa: PLC0415
    from rft_jax.model.registry import resolve_compute_dtype, resolve_logprob_impl  # noqa: PLC0415
    from rft_jax.model.tokenizer import load_tokenizer  # noqa: PLC0415

    tokenizer = load_tokenizer(cfg.model.name)
    pairs = pairs_from_examples(tokenizer, load_dataset(cfg.data, tokenizer=tokenizer))
    if not pairs:
        raise ValueError(f"{cfg.data} has no example with an assistant turn to learn from")
    model_cfg, params = load_model(cfg.model.name, dtype=jnp.float32)
    if cfg.mode == "lora":
        trainable, frozen, scale = init_lora(model_cfg, cfg.lora, jax.random.key(cfg.seed)), params, cfg.lora.scale
    else:
        trainable, frozen, scale = params, None, None
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({"kind": "sft", **dataclasses.asdict(cfg)}, indent=1))
    settings = SFTSettings(model_cfg, scale, resolve_compute_dtype(cfg.model.compute_dtype), remat=cfg.model.remat,
                           logprob_impl=resolve_logprob_impl(cfg.model.logprob_impl))
    state, losses = train_sft(trainable, frozen, tokenizer, pairs, settings, steps=cfg.steps,
                              batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, seed=cfg.seed,
                              max_target_tokens=cfg.max_target_tokens)
    (out / "sft_losses.json").write_text(json.dumps(losses))
    ckpt = RunCheckpoints(out)
    try:
        ckpt.save_latest(cfg.steps, state, {"kind": "sft", "loss_first": losses[0], "loss_last": losses[-1]})
    finally:
        ckpt.close()
    export_run(cfg, model_cfg, params, state.trainable, tokenizer, out / "export")
    return losses
