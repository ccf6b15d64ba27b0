"""Experiment trackers: MetricsWriter's steps, config, results and end reach wandb (offline) and MLflow (a local
SQLite store), read back from what each tracker stored; --resume continues the same tracker run; asking for
a tracker that is not installed is a ConfigError before the model loads; nothing imports them unasked."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rft_jax.monitoring import MetricsWriter
from rft_jax.monitoring.trackers import IDS_FILE, TrackingConfig, flat_numbers
from rft_jax.train import preflight, setup
from rft_jax.train.loop import run
from rft_jax.train.setup import ConfigError
from tests.test_train_run import tiny_config, tiny_model  # noqa: F401 (tiny_model: a fixture)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {"model": {"name": "tiny", "compute_dtype": "float32"}, "batch_size": 4, "data": {"levels": ["a", "b"]}}
RESULTS = {"base": {"strict/mean": 0.0}, "final": {"strict/mean": 0.25, "val/pass@1": 0.5}, "final_step": 3}


def _steps(writer: MetricsWriter, steps=range(4)) -> None:
    for step in steps:
        writer.write(step, {"critic/rewards/mean": step / 10, "val/pass@1": 1.0})


def _finish(run_dir: Path) -> None:
    """What `loop.finish` leaves for the trackers: results.json and curves.png."""
    (run_dir / "results.json").write_text(json.dumps(RESULTS))
    (run_dir / "curves.png").write_bytes(b"\x89PNG")


def _writer(run_dir: Path, tracker: str, **kw) -> MetricsWriter:
    tracking = TrackingConfig(trackers=(tracker,), project="rft-test", tags=("quick",))
    return MetricsWriter(run_dir, console=False, tensorboard=False, alarm_config=None, tracking=tracking,
                         run_config=CONFIG, **kw)


# --- MLflow: a SQLite store in the run dir (the default without a tracking URI) ---

def _mlflow(run_dir: Path):
    from mlflow.tracking import MlflowClient

    run_id = json.loads((run_dir / IDS_FILE).read_text())["mlflow"]
    return MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}"), run_id


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_mlflow_gets_the_config_each_step_the_results_and_the_end(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with _writer(tmp_path, "mlflow") as writer:
        _steps(writer)
        _finish(tmp_path)
    client, run_id = _mlflow(tmp_path)
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == tmp_path.name
    assert got.data.tags["quick"] == "" and client.get_experiment(got.info.experiment_id).name == "rft-test"
    assert {k: got.data.params[k] for k in ("model.name", "batch_size", "data.levels")} == \
        {"model.name": "tiny", "batch_size": "4", "data.levels": '["a", "b"]'}
    assert _history(client, run_id, "critic/rewards/mean") == [(0, 0.0), (1, 0.1), (2, 0.2), (3, 0.3)]
    assert _history(client, run_id, "val/pass_at_1") == [(s, 1.0) for s in range(4)]  # `@` is not an MLflow name
    assert _history(client, run_id, "results/final/strict/mean") == [(3, 0.25)]
    assert sorted(f.path for f in client.list_artifacts(run_id)) == ["curves.png", "results.json"]
    assert got.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())  # beside its store


def test_mlflow_marks_a_run_that_died_and_resume_continues_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(RuntimeError), _writer(tmp_path, "mlflow") as writer:
        _steps(writer, range(3))
        raise RuntimeError("the run dies")
    client, run_id = _mlflow(tmp_path)
    assert client.get_run(run_id).info.status == "FAILED"
    assert len(_history(client, run_id, "critic/rewards/mean")) == 3  # what it logged stays
    assert not client.list_artifacts(run_id)

    with _writer(tmp_path, "mlflow", keep_through=1) as writer:  # resumed from step 1's checkpoint
        assert client.get_run(run_id).info.status == "RUNNING"
        _steps(writer, range(2, 4))
        _finish(tmp_path)
    assert _mlflow(tmp_path)[1] == run_id
    assert client.get_run(run_id).info.status == "FINISHED"
    assert [s for s, _ in _history(client, run_id, "critic/rewards/mean")] == [0, 1, 2, 2, 3]  # step 2 redone


# --- wandb offline: its run file read back record by record ---

def _wandb_records(path: Path) -> list:
    """The records of a .wandb file: a 7-byte header, then LevelDB-log chunks in 32 KiB blocks (type 1: a whole
    record; 2, 3, 4: its first, middle and last part), each a `Record` protobuf."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, part, records = path.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _, size, kind = struct.unpack("<IHB", data[pos:pos + 7])
        part, pos = part + data[pos + 7:pos + 7 + size], pos + 7 + size
        if kind in (1, 4):
            records.append(pb.Record.FromString(part))
            part = b""
    return records


def _offline_run(tmp_path: Path, monkeypatch) -> Path:
    """No login, no network: wandb writes under tmp_path only."""
    for name, value in {"WANDB_MODE": "offline", "WANDB_DIR": tmp_path / "wandb_dir", "WANDB_SILENT": "true",
                        "WANDB_CONFIG_DIR": tmp_path / "config", "WANDB_CACHE_DIR": tmp_path / "cache",
                        "WANDB_DATA_DIR": tmp_path / "data"}.items():
        monkeypatch.setenv(name, str(value))
        if name.endswith("DIR"):
            Path(value).mkdir(parents=True, exist_ok=True)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return tmp_path / "wandb_dir"


def _items(items) -> dict:
    """History, summary or config items as {key: value}; wandb stores a key with "/" as its parts."""
    return {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}


def _by_type(records: list) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in records:
        out.setdefault(r.WhichOneof("record_type"), []).append(r)
    return out


def _wandb_files(wandb_dir: Path, timeout_s: float = 60.0) -> list[dict[str, list]]:
    """The records of each offline run under `wandb_dir`, once each file holds its run's end: wandb's service
    process may still be writing it when `finish` returns (it is done by the time the process exits)."""
    deadline = time.monotonic() + timeout_s
    while True:
        runs = [_by_type(_wandb_records(f)) for f in sorted(wandb_dir.glob("wandb/offline-run-*/run-*.wandb"))]
        if all("exit" in r for r in runs) or time.monotonic() > deadline:
            return runs
        time.sleep(0.1)


def test_wandb_offline_gets_the_config_each_step_the_results_and_the_end(tmp_path, monkeypatch):
    wandb_dir = _offline_run(tmp_path, monkeypatch)
    run_dir = tmp_path / "arm-1"
    with _writer(run_dir, "wandb") as writer:
        _steps(writer)
        _finish(run_dir)
    (stored,) = _wandb_files(wandb_dir)
    (meta,) = stored["run"]
    assert meta.run.run_id == json.loads((run_dir / IDS_FILE).read_text())["wandb"]
    assert (meta.run.project, meta.run.display_name, list(meta.run.tags)) == ("rft-test", "arm-1", ["quick"])
    config = {k: v for r in stored["config"] for k, v in _items(r.config.update).items()}
    assert config["model"] == CONFIG["model"] and config["data"] == {"levels": ["a", "b"]}
    history = {int(r.history.step.num): _items(r.history.item) for r in stored["history"]}
    assert sorted(history) == [0, 1, 2, 3]
    assert [history[s]["critic/rewards/mean"] for s in range(4)] == [0.0, 0.1, 0.2, 0.3]
    assert history[2]["val/pass@1"] == 1.0
    summary = {k: v for r in stored["summary"] for k, v in _items(r.summary.update).items()}
    assert summary["results/final/strict/mean"] == 0.25
    assert {e.path for r in stored["artifact"] for e in r.artifact.manifest.contents} == {"results.json",
                                                                                         "curves.png"}
    assert [r.exit.exit_code for r in stored["exit"]] == [0]


def test_wandb_marks_a_run_that_died_and_resume_continues_its_id(tmp_path, monkeypatch):
    wandb_dir = _offline_run(tmp_path, monkeypatch)
    with pytest.raises(RuntimeError), _writer(tmp_path / "run", "wandb") as writer:
        _steps(writer, range(2))
        raise RuntimeError("the run dies")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))  # each attempt's offline folder, told apart
    with _writer(tmp_path / "run", "wandb", keep_through=1) as writer:
        _steps(writer, range(2, 4))
    (first,), (resumed,) = _wandb_files(wandb_dir), _wandb_files(tmp_path)
    assert first["run"][0].run.run_id == resumed["run"][0].run.run_id  # `wandb sync` joins them
    assert [r.exit.exit_code for r in first["exit"]] == [1]
    assert [r.exit.exit_code for r in resumed["exit"]] == [0]
    assert sorted(int(r.history.step.num) for r in first["history"] + resumed["history"]) == [0, 1, 2, 3]


# --- installs, config, the writer when a tracker fails ---

def test_a_tracker_without_its_extra_is_a_config_error_before_the_model_loads(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if wandb were not installed
    monkeypatch.delitem(sys.modules, "rft_jax.monitoring.trackers.wandb_writer", raising=False)
    with pytest.raises(ConfigError, match=r"asks for wandb.*pip install 'rft_jax\[wandb\]'"):
        preflight.check_trackers(TrackingConfig(trackers=("wandb",)))

    def refuse(cfg):
        raise AssertionError("the model was loaded before the check fired")

    monkeypatch.setattr(setup, "load_policy", refuse)
    model = tmp_path / "model"  # a Hugging Face folder by its file names: preflight reads config.json only
    model.mkdir()
    (model / "config.json").write_text(json.dumps(
        {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 96, "hidden_size": 64,
         "intermediate_size": 112, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}))
    for name in ("tokenizer.json", "model.safetensors"):
        (model / name).write_text("")
    cfg = tiny_config(str(model), str(tmp_path / "run"), tracking=TrackingConfig(trackers=("mlflow", "wandb")))
    with pytest.raises(ConfigError, match="pip install 'rft_jax"):
        run(cfg)


def test_nothing_imports_a_tracker_unless_asked(tmp_path):
    code = ("import sys\nfrom rft_jax.cli.train import build_config\nimport rft_jax.train.loop\n"
            "from rft_jax.monitoring import MetricsWriter\n"
            f"MetricsWriter({str(tmp_path)!r}, console=False).write(1, {{'x': 1.0}})\n"
            "print(sorted(m for m in ('wandb', 'mlflow', 'sqlalchemy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_command_line_names_trackers_and_refuses_a_repeat():
    from rft_jax.cli.train import build_config
    from rft_jax.train.config import TrainConfig

    cfg = build_config(TrainConfig(), ["--tracking.trackers", "wandb", "mlflow", "--tracking.wandb-mode", "offline"])
    assert cfg.tracking.trackers == ("wandb", "mlflow") and cfg.tracking.wandb_mode == "offline"
    with pytest.raises(ValueError, match="at most once"):
        TrackingConfig(trackers=("mlflow", "mlflow"))


class _Down:
    """A tracker whose server is down."""

    run_id = "down"

    def log(self, step, scalars):
        raise ConnectionError("tracker unreachable")

    def finish(self, artifacts, summary, failed):
        raise ConnectionError("tracker unreachable")


def test_a_tracker_that_fails_is_reported_once_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("rft_jax.monitoring.writer.open_trackers", lambda *a: [_Down()])
    with MetricsWriter(tmp_path, console=False, tensorboard=False,
                       tracking=TrackingConfig(trackers=("mlflow",))) as writer:
        _steps(writer)
    out = capsys.readouterr().out
    assert out.count("_Down: log step failed (ConnectionError") == 1 and "_Down: finish failed" in out
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 4


def test_results_become_a_flat_summary_of_finite_numbers():
    assert flat_numbers({"final": {"strict/mean": 0.5, "n": 3, "bad": float("nan"), "ok": True}, "wall": 1.0},
                        "results/") == {"results/final/strict/mean": 0.5, "results/final/n": 3.0, "results/wall": 1.0}


@pytest.mark.slow  # a whole tiny run (20-95 s): `make test-slow`
def test_a_run_logs_to_both_trackers(tiny_model, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    wandb_dir = _offline_run(tmp_path, monkeypatch)
    out = tmp_path / "run"
    cfg = tiny_config(tiny_model, str(out), tracking=TrackingConfig(trackers=("wandb", "mlflow"),
                                                                    wandb_mode="offline"))
    run(cfg)
    client, run_id = _mlflow(out)
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED" and got.data.params["reward.name"] == "tests.toy_rewards:brevity"
    assert [s for s, _ in _history(client, run_id, "critic/rewards/mean")] == [1, 2, 3, 4]
    assert "results.json" in {f.path for f in client.list_artifacts(run_id)}
    (stored,) = _wandb_files(wandb_dir)
    assert [r.exit.exit_code for r in stored["exit"]] == [0]
    assert {int(r.history.step.num) for r in stored["history"]} >= {1, 2, 3, 4}
