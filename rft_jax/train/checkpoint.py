"""Orbax checkpoints of a run: the latest (for --resume) and the best k by validation reward.

A checkpoint holds the trainable pytree, optimizer state and step; the data
position and PRNG key follow from the step (data order and per-step keys are
derived from the seed), so a resumed run continues bitwise where it stopped.
"""

from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp


class RunCheckpoints:
    def __init__(self, run_dir: str | Path, keep_latest: int = 1, keep_best: int = 1):
        root = Path(run_dir).absolute() / "checkpoints"
        self.latest = ocp.CheckpointManager(root / "latest", options=ocp.CheckpointManagerOptions(
            max_to_keep=keep_latest, create=True))
        self.best = ocp.CheckpointManager(root / "best", options=ocp.CheckpointManagerOptions(
            max_to_keep=keep_best, create=True, best_fn=lambda m: m["val_reward"], best_mode="max"))

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

    def close(self) -> None:
        self.latest.close()
        self.best.close()
