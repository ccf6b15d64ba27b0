"""Errors before any compute: a missing model, an unknown family, an out_dir that cannot be written or is full.

Each case runs `rft_jax.train.loop.run` with the model loader replaced by a
failure, so a check that only fires once the model is loaded fails the test.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
from pathlib import Path

import pytest

from rft_jax.model import DEFAULT_MODEL
from rft_jax.train import preflight, setup
from rft_jax.train.loop import run
from rft_jax.train.setup import ConfigError
from tests.test_train_run import tiny_config

FAMILIES = "gemma3, llama, mistral, mixtral, qwen2, qwen3, qwen3_moe"

LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 96, "hidden_size": 64,
         "intermediate_size": 112, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}


@pytest.fixture(autouse=True)
def no_model_load(monkeypatch):
    """Every check here must fire before the model is read, let alone placed on devices or compiled."""
    def refuse(cfg):
        raise AssertionError("the model was loaded before the check fired")

    monkeypatch.setattr(setup, "load_policy", refuse)


def _hf_folder(path: Path, config: dict, *, weights: bool = True) -> Path:
    """A folder with a Hugging Face model's file names (the checks read config.json only)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    (path / "tokenizer.json").write_text("{}")
    if weights:
        (path / "model.safetensors").write_bytes(b"")
    return path


def test_a_missing_model_is_refused_before_the_run_dir_is_touched(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"model\.name: .*no_such_model.*--model\.name"):
        run(tiny_config(str(tmp_path / "no_such_model"), str(out)))
    assert not out.exists()


def test_a_model_folder_without_weights_names_the_missing_file(tmp_path):
    folder = _hf_folder(tmp_path / "model", LLAMA, weights=False)
    with pytest.raises(ConfigError, match=r"no weights \(model\.safetensors.*--model\.name"):
        run(tiny_config(str(folder), str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()


def test_an_unsupported_hf_architecture_names_the_file_the_field_and_the_supported_families(tmp_path):
    folder = _hf_folder(tmp_path / "phi3", {**LLAMA, "architectures": ["Phi3ForCausalLM"],
                                             "model_type": "phi3"})
    with pytest.raises(ConfigError) as err:
        run(tiny_config(str(folder), str(tmp_path / "run")))
    message = str(err.value)
    assert str(folder / "config.json") in message and "architectures" in message
    assert "Phi3ForCausalLM" in message and FAMILIES in message and "--model.name" in message
    assert not (tmp_path / "run").exists()


def test_an_unsupported_gguf_architecture_names_the_file_and_the_field(tmp_path):
    import gguf

    path = tmp_path / "gemma.gguf"
    writer = gguf.GGUFWriter(str(path), "gemma")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ConfigError) as err:
        preflight.check_model(str(path))
    message = str(err.value)
    assert str(path) in message and "general.architecture" in message and "'gemma'" in message
    assert FAMILIES in message


def _fail_under(monkeypatch, folder: Path, error: OSError) -> None:
    """os.mkdir and os.open raise `error` for paths under `folder` (root ignores permission bits)."""
    real_mkdir, real_open = os.mkdir, os.open

    def under(path) -> bool:
        return str(Path(path).absolute()).startswith(str(folder))

    def mkdir(path, *args, **kw):
        if under(path):
            raise error
        return real_mkdir(path, *args, **kw)

    def open_(path, *args, **kw):
        if under(path):
            raise error
        return real_open(path, *args, **kw)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", open_)


def test_an_unwritable_out_dir_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.geteuid() == 0:
            _fail_under(monkeypatch, locked, PermissionError(errno.EACCES, "Permission denied", str(locked / "run")))
        with pytest.raises(ConfigError, match=r"out_dir .*locked/run.* is not writable .*--out-dir"):
            run(tiny_config(DEFAULT_MODEL, str(locked / "run")))
    finally:
        locked.chmod(0o700)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_is_refused_by_name(tmp_path, monkeypatch):
    """Writes under out_dir go to /dev/full, which answers every write with ENOSPC as a full disk does."""
    out = tmp_path / "run"
    real_open = os.open

    def open_(path, flags, *args, **kw):
        if str(path).startswith(str(out)):
            return real_open("/dev/full", os.O_WRONLY)
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", open_)
    with pytest.raises(ConfigError, match=r"out_dir .*: no space left on its disk .*--out-dir"):
        run(tiny_config(DEFAULT_MODEL, str(out)))


def test_a_run_that_would_not_fit_on_the_disk_is_refused_with_its_estimate(tmp_path, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=50 * 2**20))
    with pytest.raises(ConfigError, match=r"0\.05 GiB free and this run writes about .*--no-export"):
        run(tiny_config(DEFAULT_MODEL, str(tmp_path / "run")))


def test_the_estimate_grows_with_what_the_run_keeps():
    model_cfg = preflight.check_model(DEFAULT_MODEL)
    cfg = tiny_config(DEFAULT_MODEL, "unused")
    lora = preflight.bytes_needed(cfg, model_cfg)
    full = preflight.bytes_needed(dataclasses.replace(cfg, mode="full"), model_cfg)
    assert full["checkpoints"] == 3 * 4 * model_cfg.num_params * 3  # latest + the one being saved + best
    assert lora["checkpoints"] < full["checkpoints"] / 10
    assert full["export"] == 4 * model_cfg.num_params and lora["export"] > full["export"]
    half = preflight.bytes_needed(dataclasses.replace(cfg, mode="full", export_dtype="bfloat16"), model_cfg)
    assert half["export"] == 2 * model_cfg.num_params


def test_the_cli_prints_the_check_and_exits_2_without_touching_out_dir(tmp_path, capsys):
    from rft_jax.cli.train import main

    out = tmp_path / "run"
    code = main(["--model.name", str(tmp_path / "no_such_model"), "--out-dir", str(out), "--data.task.name",
                 "arithmetic"])
    assert code == 2 and not out.exists()
    assert capsys.readouterr().err.startswith("rft-jax train: model.name: ")


def test_a_kernel_this_backend_cannot_run_is_refused_before_the_run_dir_is_touched(tmp_path):
    folder = _hf_folder(tmp_path / "model", LLAMA)
    out = tmp_path / "run"
    cfg = tiny_config(str(folder), str(out))
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, logprob_impl="pallas"))
    with pytest.raises(ConfigError, match=r"logprob_impl='pallas'.*'cpu'.*xla_chunked"):
        run(cfg)
    assert not out.exists()
