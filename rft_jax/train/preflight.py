"""Checks a run makes before it loads a model or compiles anything, so a bad path fails in a second.

The model: its file or folder exists, holds weights, a tokenizer and a config,
and is of a family rft_jax implements. The experiment trackers asked for are
installed. The run directory: it can be created and written, and its disk has
room for what the run will write there. Every error names the file or field and
what to do.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
from pathlib import Path

from rft_jax.model.config import ModelConfig, ModelConfigError
from rft_jax.model.families import SUPPORTED_ARCHITECTURES
from rft_jax.model.lora import check_targets
from rft_jax.model.params import WeightsError, projection_shapes
from rft_jax.model.registry import REGISTRY, apply_spec, load_config, resolve_logprob_impl, resolve_model_path
from rft_jax.monitoring.trackers import TrackingConfig, missing_extra
from rft_jax.train.config import TrainConfig
from rft_jax.train.setup import ConfigError

GiB = 2**30
PROBE_BYTES = 2**20  # big enough that a full disk refuses it, small enough to cost nothing
LOGS_BYTES = 256 * 2**20  # metrics, rollouts, evaluations, TensorBoard: generous for a long run
FAMILIES = ", ".join(sorted(SUPPORTED_ARCHITECTURES))


def check_run(cfg: TrainConfig, writes: bool = True) -> None:
    """The model first (it only reads), then the log-prob kernel on this backend, then out_dir (created, as the
    run would, to probe it) when this process `writes` it: in a cluster only process 0 touches the run dir."""
    model_cfg = check_model(cfg.model.name)
    try:
        resolve_logprob_impl(cfg.model.logprob_impl)
        model_cfg = apply_spec(model_cfg, cfg.model)
        if cfg.mode == "lora":
            check_targets(model_cfg, cfg.lora.targets)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if writes:
        check_trackers(cfg.tracking)
        out_dir = Path(cfg.out_dir)
        probe_write(out_dir)
        check_room(out_dir, bytes_needed(cfg, model_cfg), cfg.resume)


def check_trackers(tracking: TrackingConfig) -> None:
    """Each tracker asked for can be imported (it is an extra: process 0 alone logs to it), so a missing
    install fails now, with its pip command, rather than after the model is loaded."""
    for name in tracking.trackers:
        if problem := missing_extra(name):
            raise ConfigError(problem)


def check_model(name: str) -> ModelConfig:
    """The model's config, read without its weights; ConfigError for a missing file or an unknown family."""
    try:
        path = resolve_model_path(name)
    except FileNotFoundError as err:
        raise ConfigError(f"model.name: {err}. Pass --model.name a registry key ({', '.join(sorted(REGISTRY))}), "
                          "a Hugging Face folder (config.json, model.safetensors, tokenizer.json) or a .gguf file"
                          ) from err
    if path.is_dir():
        check_hf_folder(path)
    source = path if path.suffix == ".gguf" else path / "config.json"
    field = "general.architecture" if path.suffix == ".gguf" else "architectures / model_type"
    try:
        return load_config(name)
    except ModelConfigError as err:
        raise ConfigError(f"{source} (field {field}): {err}. rft_jax trains the {FAMILIES} families: pick a "
                          "model of one of them with --model.name") from err
    except (KeyError, TypeError, WeightsError, json.JSONDecodeError) as err:
        raise ConfigError(f"{source}: not a usable model config ({type(err).__name__}: {err}); re-export the "
                          "model or pass another with --model.name") from err


def check_hf_folder(folder: Path) -> None:
    """A Hugging Face folder's files, as the loaders will want them (weights.py, tokenizer.py)."""
    fix = f"(model.name={str(folder)!r}): copy the model's files there or pass another folder with --model.name"
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{folder / 'config.json'} is missing {fix}")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise ConfigError(f"{index} names shards that are missing: {missing} {fix}")
    elif not (folder / "model.safetensors").is_file():
        raise ConfigError(f"{folder} has no weights (model.safetensors or model.safetensors.index.json) {fix}")
    if not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        raise ConfigError(f"{folder} has no tokenizer (tokenizer.json or tokenizer_config.json) {fix}")


def probe_write(out_dir: Path) -> None:
    """Creates out_dir and writes (fsynced) then removes a small file there: a permission or space problem
    shows now, not at the first checkpoint. Each process probes with its own file name."""
    probe = out_dir / f".rft-jax-probe-{socket.gethostname()}-{os.getpid()}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            data = memoryview(bytes(PROBE_BYTES))
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as err:
        raise ConfigError(out_dir_problem(out_dir, err)) from err


def out_dir_problem(out_dir: Path, err: OSError) -> str:
    where = f"out_dir {str(out_dir)!r}"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"{where}: no space left on its disk ({err.strerror}). Free space there or pass --out-dir on "
                "another disk")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"{where} is not writable ({err.strerror}: {err.filename}). Fix its permissions or pass --out-dir "
                "a folder you can write")
    if err.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"{where}: {err.filename} is a file, not a folder. Pass --out-dir a folder path"
    return f"{where} cannot be written ({err}). Pass --out-dir another folder"


def lora_params(model_cfg: ModelConfig, cfg: TrainConfig) -> int:
    shapes = projection_shapes(model_cfg)
    return sum(model_cfg.num_layers * cfg.lora.rank * sum(shapes[t]) for t in cfg.lora.targets)


def bytes_needed(cfg: TrainConfig, model_cfg: ModelConfig) -> dict[str, int]:
    """What the run writes into out_dir, roughly, by kind. A checkpoint holds the trainable parameters and
    Adam's two moments (float32); a save writes the new latest before it deletes the oldest. A warm start's model
    is a float32 Hugging Face folder, the export one in `export_dtype` (bfloat16: half the bytes)."""
    model = 4 * model_cfg.num_params
    lora = cfg.mode == "lora"
    trainable = 4 * lora_params(model_cfg, cfg) if lora else model
    kept = cfg.checkpoint.keep_latest + 1 + cfg.checkpoint.keep_best
    export = model + trainable if lora else model
    if lora and (cfg.init_from or cfg.warm_start.steps > 0):
        export += model  # the base the adapter applies to is written beside it
    export = export // 2 if cfg.export_dtype == "bfloat16" else export
    return {"checkpoints": 3 * trainable * kept, "export": export if cfg.export else 0,
            "warm start": model if cfg.warm_start.steps > 0 else 0, "logs": LOGS_BYTES}


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0


def check_room(out_dir: Path, needed: dict[str, int], resume: bool) -> None:
    """Refuses a run whose estimated writes exceed the free space of out_dir's disk. A resumed run's checkpoints,
    export and warm start are already there (it replaces them), so they count as room."""
    free = shutil.disk_usage(out_dir).free
    if resume:
        free += sum(folder_bytes(out_dir / sub) for sub in ("checkpoints", "export", "warm_start"))
    total = sum(needed.values())
    if total <= free:
        return
    parts = ", ".join(f"{kind} {n / GiB:.2f}" for kind, n in needed.items() if n)
    raise ConfigError(f"out_dir {str(out_dir)!r}: its disk has {free / GiB:.2f} GiB free and this run writes about "
                      f"{total / GiB:.2f} GiB there ({parts} GiB). Free space, pass --out-dir on another disk, or "
                      "write less: --checkpoint.keep-latest 1 --checkpoint.keep-best 1, --no-export, --mode lora")
