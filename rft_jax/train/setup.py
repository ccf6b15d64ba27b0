"""Everything a run needs before its first step: data, reward, model, adapters, optimizer.

All checks that can fail on bad input run here, before any compute.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from rft_jax.data import Example, load_dataset
from rft_jax.data.validate import write_jsonl
from rft_jax.grpo import make_optimizer
from rft_jax.model import load_model
from rft_jax.model.lora import init_lora
from rft_jax.model.tokenizer import load_tokenizer
from rft_jax.rewards import build_reward
from rft_jax.train.config import TrainConfig
from rft_jax.train.step import TrainState


class ConfigError(ValueError):
    """A run configuration that cannot start; the message says what to change."""


@dataclasses.dataclass
class Splits:
    train: list[Example]
    val: list[Example]
    test: list[Example]


def generate_task_files(cfg: TrainConfig, run_dir: Path) -> tuple[str, str, str]:
    from rft_jax.data.tasks.arithmetic import generate_arithmetic  # noqa: PLC0415

    task = cfg.data.task
    folder = run_dir / "data"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, n, seed in (("train", task.num_train, task.seed_train), ("val", task.num_val, task.seed_val),
                           ("test", task.num_test, task.seed_test)):
        path = folder / f"{split}.jsonl"
        write_jsonl(str(path), generate_arithmetic(n, seed=seed, levels=task.levels, prompt=task.prompt))
        paths.append(str(path))
    return tuple(paths)


def load_splits(cfg: TrainConfig, run_dir: Path, tokenizer, needs_reference: bool) -> Splits:
    """Validated train/val/test examples (the same validation as `rft-jax data validate`)."""
    if cfg.data.task.name != "none":
        train, val, test = generate_task_files(cfg, run_dir)
    else:
        train, val, test = cfg.data.train_file, cfg.data.val_file, cfg.data.test_file
        if not train:
            raise ConfigError("no training data: set data.train_file (RFT JSONL) or data.task")
    load = lambda p: load_dataset(p, tokenizer=tokenizer, max_prompt_tokens=cfg.data.max_prompt_tokens,  # noqa: E731
                                  require_reference=needs_reference) if p else []
    splits = Splits(load(train), load(val), load(test))
    train_ids = {ex.id for ex in splits.train}
    leaked = [ex.id for ex in splits.test if ex.id in train_ids]
    if leaked:
        raise ConfigError(f"{len(leaked)} test examples also appear in the training data (e.g. {leaked[0]})")
    if len(splits.train) < cfg.batch_size:
        raise ConfigError(f"training data has {len(splits.train)} examples, fewer than batch_size={cfg.batch_size}")
    return splits


def build_scorer(spec: str):
    try:
        return build_reward(spec)
    except (ValueError, TypeError, ImportError, AttributeError) as err:
        raise ConfigError(f"reward {spec!r}: {err}") from err


def load_policy(cfg: TrainConfig):
    """(model config, float32 params, tokenizer)."""
    model_cfg, params = load_model(cfg.model.name, dtype=jnp.float32)
    return model_cfg, params, load_tokenizer(cfg.model.name)


def check_lengths(cfg: TrainConfig, model_cfg) -> None:
    """Prompt + response must fit the model's context (the sampler's KV cache is sized from them)."""
    need = cfg.data.max_prompt_tokens + cfg.sampling.max_new_tokens
    if need > model_cfg.max_position_embeddings:
        raise ConfigError(
            f"data.max_prompt_tokens ({cfg.data.max_prompt_tokens}) + sampling.max_new_tokens "
            f"({cfg.sampling.max_new_tokens}) = {need} exceeds the model's context of "
            f"{model_cfg.max_position_embeddings} tokens; lower one of them")


def total_steps(cfg: TrainConfig, num_train: int) -> int:
    per_epoch = num_train // cfg.batch_size
    steps = per_epoch * cfg.epochs
    return min(steps, cfg.max_steps) if cfg.max_steps else steps


def init_state(cfg: TrainConfig, model_cfg, params: dict, steps: int):
    """(TrainState, frozen base or None, optimizer)."""
    optimizer = make_optimizer(cfg.optimizer, steps)
    if cfg.mode == "lora":
        trainable = init_lora(model_cfg, cfg.lora, jax.random.key(cfg.seed + 1))
        frozen = params
    else:
        trainable, frozen = params, None
    return TrainState(trainable, optimizer.init(trainable), jnp.int32(0)), frozen, optimizer


RUN_FILES = ("metrics.jsonl", "checkpoints", "results.json")  # what marks a folder as holding a run


def set_aside_previous_run(run_dir: Path) -> Path | None:
    """Moves an earlier run out of `run_dir` before a fresh (not --resume) run starts there.

    Its metrics would otherwise be appended to, mixing two runs in one set of
    curves, and its best checkpoint would compete with the new run's. Nothing is
    deleted: the earlier run goes to `<run_dir>.previous-<time>`.
    """
    if not any((run_dir / name).exists() for name in RUN_FILES):
        return None
    config = run_dir / "config.json"  # written when that run started
    started = config.stat().st_mtime if config.exists() else time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    target = run_dir.with_name(f"{run_dir.name}.previous-{stamp}")
    while target.exists():
        target = target.with_name(target.name + "-1")
    run_dir.rename(target)
    return target


def write_run_config(cfg: TrainConfig, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1, default=str))
