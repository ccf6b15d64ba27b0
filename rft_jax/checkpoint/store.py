"""Orbax checkpoints of a run: the latest (for --resume) and the best k by validation reward.

A checkpoint holds the trainable pytree, optimizer state and step; the data
position and PRNG key follow from the step (data order and per-step keys are
derived from the seed), so a resumed run continues bitwise where it stopped.
Orbax writes a step into a temporary folder and renames it when complete, so a
save cut short (kill -9, a full disk) leaves the previous step as the latest;
the temporary folder is removed when the run resumes.

The second half reads a finished run's checkpoint back as a policy, for
`rft-jax eval --checkpoint` and for `init_from` (SFT then RFT). `rft-jax train`
and `rft-jax sft` write the same layout: RUN/config.json (which names the base
model, mode and LoRA settings) and RUN/checkpoints/{latest,best}/STEP.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from rft_jax.model.config import ModelConfig
from rft_jax.model.lora import LoraConfig, init_lora, merge_lora
from rft_jax.model.params import init_params

WARM_START_MODEL = "warm_start/model"  # RUN/warm_start/model: a warm-started run's starting policy (HF folder)


class RunCheckpoints:
    def __init__(self, run_dir: str | Path, keep_latest: int = 1, keep_best: int = 1):
        root = Path(run_dir).absolute() / "checkpoints"
        self.latest = ocp.CheckpointManager(root / "latest", options=ocp.CheckpointManagerOptions(
            max_to_keep=keep_latest, create=True, cleanup_tmp_directories=True))
        self.best = ocp.CheckpointManager(root / "best", options=ocp.CheckpointManagerOptions(
            max_to_keep=keep_best, create=True, best_fn=_val_reward, best_mode="max", cleanup_tmp_directories=True))

    def save_latest(self, step: int, state, meta: dict) -> None:
        self.latest.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                       meta=ocp.args.JsonSave(meta)), force=True)
        self.latest.wait_until_finished()

    def save_best(self, step: int, state, meta: dict, val_reward: float) -> None:
        self.best.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     meta=ocp.args.JsonSave(meta)),
                       metrics={"val_reward": float(val_reward)}, force=True)
        self.best.wait_until_finished()

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def restore(self, manager: ocp.CheckpointManager, step: int, like) -> tuple[object, dict]:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        out = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                            meta=ocp.args.JsonRestore()))
        return out["state"], dict(out["meta"])

    def best_step(self) -> int | None:
        return self.best.best_step()

    def forget_best_after(self, step: int) -> list[int]:
        """Deletes the best checkpoints of steps after `step`: a resumed run redoes those steps, so they belong
        to an attempt that no longer exists (and could win the final evaluation over the real run's)."""
        lost = [s for s in self.best.all_steps() if s > step]
        for s in lost:
            self.best.delete(s)
        return lost

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def _val_reward(metrics: dict) -> float:
    return metrics["val_reward"]


class CheckpointError(ValueError):
    """A path that is not a usable checkpoint; the message says what to pass instead."""


_WHAT_TO_PASS = ("pass a run directory (the --out-dir of `rft-jax train` or the --out of `rft-jax sft`) "
                 "or one of its checkpoints/best/STEP or checkpoints/latest/STEP folders")


@dataclasses.dataclass(frozen=True)
class CheckpointRef:
    run_dir: Path
    kind: str  # "best" | "latest"
    step: int

    @property
    def path(self) -> Path:
        return self.run_dir / "checkpoints" / self.kind / str(self.step)

    def describe(self) -> str:
        return f"{self.run_dir} ({self.kind} checkpoint, step {self.step})"


def _not_a_run_hint(p: Path) -> str:
    """What the folder looks like instead, so the user knows which option takes it."""
    if (p / "adapter_config.json").is_file():
        return " It looks like a PEFT adapter folder: evaluate it with --adapter (and --model BASE)."
    if (p / "config.json").is_file() and any(p.glob("*.safetensors")):
        return " It looks like a model folder: pass it as the model (--model, or --model.name for train)."
    for model in (p / "model", p / "export" / "model"):
        if model.is_dir():
            return f" Its exported model is {model} (pass that as the model)."
    return ""


def _saved_step(folder: Path, kind: str) -> int | None:
    """The best step by validation reward (`best`) or the newest (`latest`); None when none was saved."""
    if not folder.is_dir():
        return None
    options = ocp.CheckpointManagerOptions(create=False, best_fn=_val_reward if kind == "best" else None,
                                           best_mode="max")
    manager = ocp.CheckpointManager(folder, options=options)  # no max_to_keep: it never deletes
    try:
        return manager.best_step() if kind == "best" else manager.latest_step()
    finally:
        manager.close()


def find_checkpoint(path: str | Path) -> CheckpointRef:
    """A checkpoint step folder as given, or for a run directory its best checkpoint, else its latest.

    Best is by validation reward (RFT runs save one when validation improves);
    SFT runs, and RFT runs that never improved on the base, have only a latest.
    """
    p = Path(path).expanduser().absolute()
    if not p.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; {_WHAT_TO_PASS}")
    if p.name.isdigit() and p.parent.name in ("best", "latest") and p.parent.parent.name == "checkpoints":
        if not (p / "state").is_dir():
            raise CheckpointError(f"{p} has no state/ folder (an interrupted save?); pick another step "
                                  f"or pass the run directory {p.parent.parent.parent}")
        return CheckpointRef(p.parent.parent.parent, p.parent.name, int(p.name))
    if p.name == "checkpoints":
        p = p.parent
    if not (p / "checkpoints").is_dir():
        raise CheckpointError(f"{p} is not a training run or checkpoint (it has no checkpoints/ folder)."
                              f"{_not_a_run_hint(p)} To use a checkpoint, {_WHAT_TO_PASS}.")
    for kind in ("best", "latest"):
        step = _saved_step(p / "checkpoints" / kind, kind)
        if step is not None:
            return CheckpointRef(p, kind, step)
    raise CheckpointError(f"{p} has no saved checkpoint yet: runs save one every --checkpoint.interval steps, "
                          "on SIGINT/SIGTERM and at the end (SFT at the end). Wait for one or finish the run.")


@dataclasses.dataclass(frozen=True)
class TrainedFrom:
    """What a run's checkpoints apply to, from its config.json."""

    model: str  # base model name, as the run was given it
    mode: str  # "lora" | "full"
    lora: LoraConfig
    init_from: str = ""  # the checkpoint the run itself started from (its base is that policy)


def read_trained_from(run_dir: Path) -> TrainedFrom:
    file = run_dir / "config.json"
    if not file.is_file():
        raise CheckpointError(f"{file} is missing, so the model this run was trained from is unknown; "
                              "restore the run's config.json (written when the run started)")
    doc = json.loads(file.read_text())
    try:
        lora = doc["lora"]
        return TrainedFrom(model=doc["model"]["name"], mode=doc["mode"],
                           lora=LoraConfig(rank=int(lora["rank"]), alpha=float(lora["alpha"]),
                                           targets=tuple(lora["targets"])),
                           init_from=doc.get("init_from") or "")  # runs from before init_from lack the key
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{file} is not an rft-jax train/sft run config (no {err})") from err


def read_trainable(ref: CheckpointRef) -> dict:
    """Only the trainable pytree (LoRA adapters or full params) of a checkpoint, on one device.

    A partial restore: the optimizer state (2x the trainable for Adam) is never read.
    """
    saved = ocp.PyTreeCheckpointHandler().metadata(ref.path / "state").tree["trainable"]
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = {"trainable": jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), saved)}
    out = ocp.PyTreeCheckpointer().restore(ref.path / "state", args=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True))
    return out["trainable"]


def _check_fits(trainable: dict, expected: dict, ref: CheckpointRef, src: TrainedFrom, model: str) -> None:
    shapes = lambda tree: {jax.tree_util.keystr(k): tuple(v.shape)  # noqa: E731
                           for k, v in jax.tree_util.tree_leaves_with_path(tree)}
    got, want = shapes(trainable), shapes(expected)
    if got == want:
        return
    bad = sorted(set(got) ^ set(want)) or [k for k in sorted(got) if got[k] != want[k]]
    detail = (f"{bad[0]} is {got.get(bad[0], 'absent')} in the checkpoint, {want.get(bad[0], 'absent')} "
              f"for the model")
    raise CheckpointError(f"{ref.describe()} ({src.mode}) was trained from {src.model!r} and does not fit "
                          f"{model!r}: {detail}. Use the model it was trained from.")


def checkpoint_params(ref: CheckpointRef, model: str, model_cfg: ModelConfig, base_params: dict | None) -> dict:
    """The checkpoint's policy as one float32 parameter pytree on `model` (config `model_cfg`).

    Full runs: the trained params (`base_params` is not used and may be None).
    LoRA runs: the adapters merged into the base, W + (alpha/r) A @ B in
    float32 exactly as export does, so a checkpoint evaluates like its export.
    A run that itself started `init_from` another checkpoint has that policy
    as its base, so chains (SFT -> RFT -> RFT) restore recursively; a run
    with a warm start has its warm-started policy (RUN/warm_start/model) as base.
    """
    src = read_trained_from(ref.run_dir)
    if src.model != model:
        print(f"[rft-jax] {ref.describe()} was trained from {src.model!r}; restoring it onto {model!r}")
    trainable = read_trainable(ref)
    key = jax.random.key(0)
    if src.mode == "full":
        _check_fits(trainable, jax.eval_shape(lambda: init_params(model_cfg, key)), ref, src, model)
        return trainable
    _check_fits(trainable, jax.eval_shape(lambda: init_lora(model_cfg, src.lora, key)), ref, src, model)
    if (ref.run_dir / WARM_START_MODEL).is_dir():  # the warm-started policy (any init_from is inside it)
        from rft_jax.model.registry import load_model  # noqa: PLC0415

        base_params = load_model(str(ref.run_dir / WARM_START_MODEL), dtype=jnp.float32)[1]
    elif src.init_from:
        base_params = checkpoint_params(find_checkpoint(src.init_from), model, model_cfg, base_params)
    return merge_lora(base_params, trainable, src.lora.scale)


@dataclasses.dataclass(frozen=True)
class RestoredPolicy:
    checkpoint: CheckpointRef
    model: str  # the base it was restored onto; its tokenizer is the policy's
    model_cfg: ModelConfig
    params: dict  # float32, LoRA merged

    def describe(self) -> str:
        return f"{self.checkpoint.describe()} on {self.model}"


def restore_policy(path: str | Path, model: str | None = None) -> RestoredPolicy:
    """A run directory or checkpoint folder as a ready-to-sample policy.

    The base model is the one in the run's config.json unless `model` overrides
    it (a moved folder, say); an override whose shapes do not fit is refused.
    """
    from rft_jax.model.registry import load_config, load_model  # noqa: PLC0415

    ref = find_checkpoint(path)
    src = read_trained_from(ref.run_dir)
    name = model or src.model
    try:
        if src.mode == "full":  # the checkpoint holds every weight: the base's are not read
            model_cfg, base = load_config(name), None
        else:
            model_cfg, base = load_model(name, dtype=jnp.float32)
    except FileNotFoundError as err:
        raise CheckpointError(f"{ref.describe()} was trained from {src.model!r}, which is not found here "
                              f"({err}); pass --model with its location") from err
    return RestoredPolicy(ref, name, model_cfg, checkpoint_params(ref, name, model_cfg, base))
