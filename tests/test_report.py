"""`rft-jax report` on a synthetic run directory: page content, the CLI, and a real headless browser."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from rft_jax.cli import report as report_cli
from rft_jax.evaluation import baseline_verdict, report, summarize_samples
from rft_jax.monitoring import MetricsWriter, names

STEPS = 80
# The synthetic run is not in reasoning mode, so the reasoning panels have nothing to draw.
# The synthetic run is synchronous and not in reasoning mode: those panels have no data.
LOGGED_PANELS = [p for p in report.PANELS if not p.key.startswith(("reasoning", "staleness", "off_policy"))]
PROMPTS = [f"What is {a} * {b}? End with ANSWER: <n>." for a, b in [(12, 7), (31, 4), (9, 9), (25, 16), (3, 44)]]


def _step_metrics(step: int, rng: np.random.Generator) -> dict[str, float]:
    t = step / STEPS
    reward = 0.3 + 0.4 * t + rng.normal(0, 0.04)
    metrics = {
        names.REWARD_MEAN: reward, names.REWARD_MAX: 1.0, names.REWARD_MIN: 0.0,
        names.ADVANTAGE_MEAN: 0.0, names.ADVANTAGE_MAX: 1.5, names.ADVANTAGE_MIN: -1.5,
        names.reward_component("correct"): reward * 0.7, names.reward_component("format"): 0.4 + 0.2 * t,
        names.REWARD_ERRORS: 0.0,
        names.PG_LOSS: rng.normal(0, 0.02), names.PG_CLIPFRAC: 0.05 + rng.normal(0, 0.01), names.PPO_KL: 1e-3,
        names.ENTROPY: 0.9 - 0.3 * t + rng.normal(0, 0.02), names.KL_LOSS: 0.03 * (1 - math.exp(-4 * t)),
        names.GRAD_NORM: 0.8 + rng.normal(0, 0.1), names.LR: 1e-5 * min(1.0, step / 10),
        names.RESPONSE_LENGTH_MEAN: 180 + rng.normal(0, 6), names.RESPONSE_LENGTH_MAX: 256, names.RESPONSE_LENGTH_MIN: 40,
        names.RESPONSE_CLIP_RATIO: 0.03 if step < 50 else 0.25,  # makes the truncation alarm fire
        names.PROMPT_LENGTH_MEAN: 78, names.ZERO_STD_FRAC: 0.3 - 0.1 * t,
        names.TIMING_GENERATE: 20 + rng.normal(0, 1), names.TIMING_REWARD: 0.5, names.TIMING_LOGPROB: 4.0,
        names.TIMING_UPDATE: 8.0, names.TIMING_STEP: 33.0, names.TOKENS_PER_S: 1500 + rng.normal(0, 50),
    }
    if step % 10 == 0:
        metrics[names.VAL_REWARD_MEAN] = 0.28 + 0.35 * t
        metrics[names.VAL_PASS_AT_1] = 0.2 + 0.3 * t
    return metrics


def _eval_file(run_dir: Path, name: str, step: int | None, rewards_PxG: np.ndarray, completions: list[str]) -> None:
    summary = summarize_samples(rewards_PxG, greedy_rewards_P=rewards_PxG[:, 0], lengths_PxG=np.full(rewards_PxG.shape, 150))
    data = {
        "name": name, "step": step, "model": "SmolLM2-135M-Instruct", "dataset": "arith/test.jsonl",
        "metrics": summary.to_metrics(),
        "verdict": baseline_verdict(summary).to_dict() if name == "base" else None,
        "samples": [
            {"id": f"q{i}", "prompt": p, "completion": c, "reward": float(r[0])}
            for i, (p, c, r) in enumerate(zip(PROMPTS, completions, rewards_PxG))
        ],
    }
    (run_dir / f"eval_{name}.json").write_text(json.dumps(data))


def make_synthetic_run(run_dir: Path) -> Path:
    """A small finished run: metrics with one alarm, a base and a final evaluation."""
    rng = np.random.default_rng(0)
    with MetricsWriter(run_dir, console=False, tensorboard=False) as writer:
        for step in range(1, STEPS + 1):
            writer.write(step, _step_metrics(step, rng))
    base = (rng.random((5, 8)) < 0.3).astype(float)
    final = (rng.random((5, 8)) < 0.6).astype(float)
    _eval_file(run_dir, "base", None, base, ["Let me think... 12*7 is <b>74</b>", "124", "I am not sure.", "400", "132"])
    _eval_file(run_dir, "final", STEPS, final, ["12*7 = 84\nANSWER: 84", "ANSWER: 124", "ANSWER: 81", "ANSWER: 400", "ANSWER: 132"])
    return run_dir


@pytest.fixture(scope="module")
def built_report(tmp_path_factory) -> Path:
    run_dir = make_synthetic_run(tmp_path_factory.mktemp("run"))
    return report.build_report(run_dir)


def test_report_has_every_section(built_report):
    page = built_report.read_text()
    for heading in ("Alarms", "Training curves", "Evaluation", "Examples"):
        assert f">{heading}</h2>" in page
    assert page.count("<img ") == len(LOGGED_PANELS)  # every panel had data
    assert "truncation" in page and "raise max_new_tokens" in page
    assert "Ready for RFT" in page or "SFT first" in page  # the base verdict is shown
    assert "&lt;b&gt;74&lt;/b&gt;" in page  # model output is escaped, never rendered as HTML
    assert "ANSWER: 84" in page
    table = page[page.index("class='evals'") :]
    assert table.index(">pass@2<") < table.index(">pass@4<") < table.index(">pass@8<")


def test_pngs_saved_beside_the_html(built_report):
    pngs = sorted(p.name for p in built_report.parent.glob("*.png"))
    assert pngs == sorted(f"{p.key}.png" for p in LOGGED_PANELS)


def test_eval_order_and_pairing(built_report):
    evals = report.load_evals(built_report.parent.parent)
    assert [e.name for e in evals] == ["base", "final"]
    pairs = report.paired_samples(evals[0], evals[1], limit=3)
    assert [(b["id"], a["id"]) for b, a in pairs] == [("q0", "q0"), ("q1", "q1"), ("q2", "q2")]


def test_format_value():
    assert report.format_value("pass@1", 0.4567) == "45.7%"
    assert report.format_value("num_prompts", 100.0) == "100"
    assert report.format_value("reward/mean", 0.123456) == "0.1235"
    assert report.format_value("x", float("nan")) == "-"
    assert report.format_delta("pass@1", 0.25, 0.5) == "+25.0 pp"
    assert report.format_delta("reward/mean", 0.5, 0.25) == "-0.25"
    assert report.format_delta("reward/mean", None, 0.25) == "-"


def test_cli(tmp_path, capsys):
    run_dir = tmp_path / "run"
    with MetricsWriter(run_dir, console=False, tensorboard=False, alarm_config=None) as writer:
        writer.write(1, {names.ENTROPY: 1.0})  # one panel: the CLI, not the plotting, is under test
    assert report_cli.main([str(run_dir), "--out", str(tmp_path / "out"), "--examples", "2"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "out" / "report.html")
    assert report_cli.main([str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert report_cli.main([str(tmp_path / "empty")]) == 2


def test_report_of_a_run_without_evals(tmp_path):
    run_dir = tmp_path / "run"
    with MetricsWriter(run_dir, console=False, tensorboard=False) as writer:
        writer.write(1, {names.REWARD_MEAN: 0.1})
    page = report.build_report(run_dir).read_text()
    assert "No eval_*.json files" in page and page.count("<img ") == 1


# --- the page in a real browser ---------------------------------------------------------------

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0",
]
# Console messages and load failures Chromium logs when a page misbehaves.
PAGE_ERRORS = re.compile(r"Uncaught|CONSOLE\(\d+\)|Failed to load|net::ERR_|Not allowed to load")


@pytest.fixture(scope="module")
def chromium() -> str:
    """The browser executable; requested before the report so a skip costs nothing."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; CI must run `apt-get install -y --no-install-recommends chromium fonts-dejavu-core`")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    return exe


def _run_chromium(exe: str, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=120)


@pytest.mark.browser
def test_report_renders_in_headless_chromium(chromium, built_report, tmp_path):
    exe = chromium
    url = built_report.resolve().as_uri()

    dom = _run_chromium(exe, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for heading in ("Alarms", "Training curves", "Evaluation", "Examples"):
        assert f">{heading}</h2>" in dom.stdout
    assert dom.stdout.count("<img ") == len(LOGGED_PANELS)
    assert not PAGE_ERRORS.search(dom.stderr), dom.stderr[-2000:]

    shot_path = tmp_path / "report.png"
    shot = _run_chromium(exe, f"--screenshot={shot_path}", "--window-size=1280,2000", "--hide-scrollbars", url)
    assert shot.returncode == 0 and shot_path.exists(), shot.stderr[-2000:]
    assert not PAGE_ERRORS.search(shot.stderr), shot.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(shot_path)[..., :3]  # floats in [0, 1]
    assert pixels.shape[:2] == (2000, 1280)
    # Charts were decoded and drawn: matplotlib's default blue (#1f77b4) covers a visible area.
    blue = np.abs(pixels - np.array([0x1F, 0x77, 0xB4]) / 255).max(axis=-1) < 0.03
    assert blue.sum() > 2000, f"only {blue.sum()} chart-blue pixels: images did not render"
    keep = os.environ.get("RFT_JAX_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot_path, keep)
