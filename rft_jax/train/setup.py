"""Everything a run needs before its first step: data, reward, model, adapters, optimizer.

All checks that can fail on bad input run here, before any compute.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rft_jax.checkpoint.store import WARM_START_MODEL, checkpoint_params, find_checkpoint
from rft_jax.data import Example
from rft_jax.data.reasoning import PlannedChat, plan_reasoning
from rft_jax.data.validate import id_list, load_examples, write_jsonl
from rft_jax.grpo import TrainState, make_optimizer
from rft_jax.model import load_model
from rft_jax.model.lora import init_lora
from rft_jax.model.registry import apply_spec
from rft_jax.model.tokenizer import load_tokenizer
from rft_jax.parallel.distributed import barrier, is_primary
from rft_jax.rewards import build_reward
from rft_jax.rewards.sandbox import SandboxUnavailable
from rft_jax.train.config import TrainConfig
from rft_jax.train.memory import memory_problem


class ConfigError(ValueError):
    """A run configuration that cannot start; the message says what to change."""


@dataclasses.dataclass
class Splits:
    train: list[Example]
    val: list[Example]
    test: list[Example]
    summary: dict = dataclasses.field(default_factory=dict)
    """Per split: its file, the examples kept and those left out; saved as RUN_DIR/data_summary.json."""


SPLITS = ("train", "val", "test")


def task_files(run_dir: Path) -> tuple[str, str, str]:
    """Where a generated task's train/val/test files are (RUN_DIR/data/<split>.jsonl)."""
    return tuple(str(run_dir / "data" / f"{split}.jsonl") for split in SPLITS)


def write_task_files(cfg: TrainConfig, run_dir: Path) -> None:
    from rft_jax.data.tasks.arithmetic import generate_arithmetic  # noqa: PLC0415

    task = cfg.data.task
    (run_dir / "data").mkdir(parents=True, exist_ok=True)
    for path, n, seed in zip(task_files(run_dir), (task.num_train, task.num_val, task.num_test),
                             (task.seed_train, task.seed_val, task.seed_test)):
        write_jsonl(path, generate_arithmetic(n, seed=seed, levels=task.levels, prompt=task.prompt))


def load_split(path: str | None, cfg: TrainConfig, tokenizer, needs_reference: bool) -> tuple[list[Example], dict]:
    """A split's examples (the same validation as `rft-jax data validate`) and its summary.

    Prompts over data.max_prompt_tokens are left out, with their count and first ids
    printed, rather than refusing the file: the file is refused only when none fits.
    """
    if not path:
        return [], {"file": None, "examples": 0, "skipped_over_max_prompt_tokens": 0, "skipped_ids": []}
    limit = cfg.data.max_prompt_tokens
    # Counted as training renders them: with reasoning on, the instruction and the opened tag are prompt tokens.
    chat = PlannedChat(tokenizer, plan_reasoning(cfg.reasoning, tokenizer))
    loaded = load_examples(path, tokenizer=chat, max_prompt_tokens=limit, require_reference=needs_reference,
                           skip_too_long=True)
    skipped = loaded.too_long
    if skipped:
        print(f"[rft-jax] {path}: skipped {len(skipped)} of {len(skipped) + len(loaded.examples)} prompts longer "
              f"than data.max_prompt_tokens={limit}: {id_list(skipped)}")
    return loaded.examples, {"file": path, "examples": len(loaded.examples),
                             "skipped_over_max_prompt_tokens": len(skipped), "skipped_ids": skipped}


def load_splits(cfg: TrainConfig, run_dir: Path, tokenizer, needs_reference: bool) -> Splits:
    """Validated train/val/test examples; each split's summary says what was left out."""
    if cfg.data.task.name != "none":  # written by process 0 (`claim_run_dir`)
        files = task_files(run_dir)
    else:
        files = cfg.data.train_file, cfg.data.val_file, cfg.data.test_file
        if not files[0]:
            raise ConfigError("no training data: set data.train_file (RFT JSONL) or data.task")
    (train, train_summary), (val, val_summary), (test, test_summary) = (
        load_split(path, cfg, tokenizer, needs_reference) for path in files)
    summary = {"max_prompt_tokens": cfg.data.max_prompt_tokens, "train": train_summary, "val": val_summary,
               "test": test_summary}
    splits = Splits(train, val, test, summary)
    train_ids = {ex.id for ex in splits.train}
    leaked = [ex.id for ex in splits.test if ex.id in train_ids]
    if leaked:
        raise ConfigError(f"{len(leaked)} test examples also appear in the training data (e.g. {leaked[0]})")
    if len(splits.train) < cfg.batch_size:
        skipped = train_summary["skipped_over_max_prompt_tokens"]
        also = f" ({skipped} more left out as longer than data.max_prompt_tokens)" if skipped else ""
        raise ConfigError(f"training data has {len(splits.train)} examples{also}, fewer than "
                          f"batch_size={cfg.batch_size}")
    return splits


def build_scorer(spec):
    try:
        return build_reward(spec)
    except (ValueError, TypeError, ImportError, AttributeError, SandboxUnavailable) as err:
        raise ConfigError(f"reward {spec!r}: {err}") from err


def load_policy(cfg: TrainConfig):
    """(model config, float32 params, tokenizer)."""
    model_cfg, params = load_model(cfg.model.name, dtype=jnp.float32)
    return apply_spec(model_cfg, cfg.model), params, load_tokenizer(cfg.model.name)


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
    # The schedule counts RL steps: each makes ppo_epochs x ppo_minibatches optimizer updates.
    optimizer = make_optimizer(cfg.optimizer, steps, cfg.ppo_epochs * cfg.ppo_minibatches)
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


def config_json(cfg: TrainConfig) -> dict:
    """The config as JSON, with rewards in the spec form the command line takes back."""
    doc = dataclasses.asdict(cfg)
    doc["reward"] = cfg.reward.to_json()
    doc["evaluation"]["views"] = {name: spec.to_json() for name, spec in cfg.evaluation.views}
    return doc


def write_run_config(cfg: TrainConfig, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config_json(cfg), indent=1, default=str))


class Prepared(NamedTuple):
    """A run's inputs, checked: the reward, the starting policy, the data and the step count."""

    scorer: object
    model_cfg: object
    params: dict  # float32; `init_from`'s policy when set
    tokenizer: object
    splits: Splits
    steps: int


def resolve_init_from(cfg: TrainConfig) -> TrainConfig:
    """`init_from` as the exact checkpoint folder, recorded in config.json (the run's own checkpoints build on it)."""
    if not cfg.init_from:
        return cfg
    return dataclasses.replace(cfg, init_from=str(find_checkpoint(cfg.init_from).path))


def initial_params(cfg: TrainConfig, model_cfg, params: dict) -> dict:
    """`init_from`: the checkpoint's policy as full params, which the run then treats as its base model.

    So the frozen base (LoRA) or the reference copy (full) is that policy: the KL
    reference is the initialised policy with no change to the step. LoRA-on-LoRA
    merges the earlier adapter and trains a fresh one rather than continuing it,
    because step.py's LoRA reference is the base with the adapter off (continuing
    would make the reference the pre-SFT model) and the two runs' ranks may differ.
    """
    ref = find_checkpoint(cfg.init_from)
    params = checkpoint_params(ref, cfg.model.name, model_cfg, params)
    print(f"[rft-jax] policy and KL reference initialised from {ref.describe()}")
    return params


def warm_start_params(run_dir: Path) -> dict:
    """The policy a warm start produced (float32), saved by `before_rl.warm_start`."""
    return load_model(str(run_dir / WARM_START_MODEL), dtype=jnp.float32)[1]


def base_origin(cfg: TrainConfig, run_dir: Path) -> str:
    """What the run's starting policy (its LoRA base, its KL reference) is when not `model.name` itself."""
    parts = [f"init_from {cfg.init_from}"] if cfg.init_from else []
    if cfg.warm_start.steps > 0:
        parts.append(f"warm start {run_dir.absolute() / WARM_START_MODEL}")
    return ", then ".join(parts)


def claim_run_dir(cfg: TrainConfig, run_dir: Path) -> None:
    """Process 0's run-dir bookkeeping: an earlier run set aside, config.json, a generated task's data."""
    if not cfg.resume and (moved := set_aside_previous_run(run_dir)):
        print(f"[rft-jax] {run_dir} held an earlier run: moved to {moved} (pass --resume to continue a run)")
    write_run_config(cfg, run_dir)
    if cfg.data.task.name != "none":
        write_task_files(cfg, run_dir)


def prepare(cfg: TrainConfig, run_dir: Path) -> Prepared:
    """Run-dir bookkeeping, then every input check that can fail, before any compute."""
    if is_primary():
        claim_run_dir(cfg, run_dir)
    # No process reads or writes the run dir (on a file system every process sees, as orbax needs) before
    # process 0 has moved an earlier run out of it and written the task's data: the other processes only read
    # those files, and write nothing but their checkpoint shards.
    barrier("rft-jax: run directory ready")
    scorer = build_scorer(cfg.reward)
    model_cfg, params, tokenizer = load_policy(cfg)
    if cfg.init_from:
        params = initial_params(cfg, model_cfg, params)
    check_lengths(cfg, model_cfg)
    if problem := memory_problem(cfg, model_cfg):  # the sampler's caches and the step's activations
        raise ConfigError(problem)
    splits = load_splits(cfg, run_dir, tokenizer, scorer.needs_reference)
    if is_primary():
        (run_dir / "data_summary.json").write_text(json.dumps(splits.summary, indent=1))
    steps = total_steps(cfg, len(splits.train))
    if steps < 1:
        raise ConfigError(f"{len(splits.train)} training examples make 0 steps of batch_size={cfg.batch_size}")
    return Prepared(scorer, model_cfg, params, tokenizer, splits, steps)
