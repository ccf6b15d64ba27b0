"""`rft-jax compare` on synthetic run folders: arms from configs, the statistics against hand-computed values,
the CSV/JSON table, the page, and the CLI end to end. No training: each run is a few small files."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from rft_jax.cli import compare as compare_cli
from rft_jax.compare import runs, stats, table
from rft_jax.compare.build import build_comparison
from rft_jax.monitoring import names

ITEMS = [f"q{i}" for i in range(40)]


def make_run(run_dir: Path, *, beta: float, seed: int, final: dict[str, float] | None = None,
             items: dict[str, float] | None = None, steps: int = 12, config: bool = True,
             process_id: int | None = None) -> Path:
    """A finished run as `rft-jax train` leaves it: config.json, metrics.jsonl, results.json, eval_final.json."""
    run_dir.mkdir(parents=True)
    if config:
        doc = {"model": {"name": "tiny"}, "loss": {"beta": beta, "kl_estimator": "k3"}, "seed": seed,
               "out_dir": str(run_dir), "resume": False, "distributed": {"process_id": process_id}}
        (run_dir / "config.json").write_text(json.dumps(doc))
    lines = []
    for step in range(1, steps + 1):
        record = {"step": step, "time": 0.0, names.REWARD_MEAN: 0.2 + 0.02 * step + beta + 0.01 * seed,
                  names.ENTROPY: 1.0 - 0.01 * step, names.RESPONSE_LENGTH_MEAN: 100 + step, names.REF_KL: 0.01 * step}
        if step % 4 == 0:
            record[names.VAL_REWARD_MEAN] = 0.3 + 0.01 * step
        lines.append(json.dumps(record))
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    final = final if final is not None else {"reward/mean": 0.5, "pass@1": 0.4}
    (run_dir / "results.json").write_text(json.dumps({"final_step": steps, "final": {**final, "eval_seconds": 3.0}}))
    samples = [{"id": i, "prompt": f"problem {i}", "completion": "42", "reward": r} for i, r in (items or {}).items()]
    (run_dir / "eval_final.json").write_text(json.dumps({"name": "final", "step": steps, "metrics": final,
                                                          "samples": samples}))
    return run_dir


def two_arms(root: Path) -> Path:
    """Arm beta=0.0 (seeds 0, 1, 2) and arm beta=0.04 (seeds 0, 1): the second solves 8 more of 40 items."""
    base_items = {i: float(k % 2) for k, i in enumerate(ITEMS)}  # every other item solved
    better = dict(base_items) | {ITEMS[k]: 1.0 for k in range(0, 16, 2)}  # 8 of the failed ones solved too
    for seed, pass1 in zip((0, 1, 2), (0.50, 0.55, 0.45)):
        make_run(root / f"b0-s{seed}", beta=0.0, seed=seed, final={"reward/mean": pass1, "pass@1": pass1},
                 items=base_items, process_id=seed)
    for seed, pass1 in zip((0, 1), (0.70, 0.72)):
        make_run(root / f"b4-s{seed}", beta=0.04, seed=seed, final={"reward/mean": pass1, "pass@1": pass1},
                 items=better)
    return root


def test_runs_differing_only_in_seed_out_dir_and_process_layout_are_one_arm(tmp_path):
    arms = runs.load_arms([two_arms(tmp_path)])
    assert [a.name for a in arms] == ["loss.beta=0.0", "loss.beta=0.04"]
    assert [[r.name for r in a.runs] for a in arms] == [["b0-s0", "b0-s1", "b0-s2"], ["b4-s0", "b4-s1"]]
    assert arms[0].seeds == [0, 1, 2] and arms[1].fields == {"loss.beta": 0.04}


def test_a_run_without_config_is_an_arm_of_its_own(tmp_path):
    make_run(tmp_path / "a", beta=0.0, seed=0)
    make_run(tmp_path / "b", beta=0.0, seed=1)
    make_run(tmp_path / "c", beta=0.0, seed=2, config=False)
    arms = runs.load_arms([tmp_path / "a", tmp_path / "b", tmp_path / "c"])
    assert [(a.name, len(a.runs)) for a in arms] == [("all runs", 2), ("c", 1)]


def test_sweep_json_names_and_orders_the_arms(tmp_path):
    sweep = two_arms(tmp_path / "sweep")
    entries = [{"name": f"loss.beta={b},seed={s}", "overrides": {"loss.beta": b}, "seed": s,
                "run_dir": str(sweep / f"b{d}-s{s}"), "status": "done"}
               for b, d, seeds in ((0.04, 4, (0, 1)), (0.0, 0, (0, 1, 2))) for s in seeds]
    (sweep / "sweep.json").write_text(json.dumps({"runs": entries}))
    arms = runs.load_arms([sweep])
    assert [a.name for a in arms] == ["loss.beta=0.04", "loss.beta=0.0"]  # the sweep's order, not the paths'
    assert runs.pick_baseline(arms, "loss.beta=0.0").name == "loss.beta=0.0"  # exact wins over a part
    with pytest.raises(runs.CompareError, match="matches several arms"):
        runs.pick_baseline(arms, "loss.beta")


def test_mean_and_95_ci_over_seeds_equal_hand_computed_values():
    ci = stats.mean_ci([0.5, 0.6, 0.7])
    assert ci.mean == pytest.approx(0.6) and ci.n == 3
    assert ci.half_width == pytest.approx(4.302652730 * 0.1 / math.sqrt(3))  # t(0.975, df=2) * s / sqrt(n)
    assert stats.mean_ci([0.42]) == (0.42, None, 1)  # one seed: no interval
    assert stats.mean_ci([]).n == 0


def test_t_quantile_matches_scipy_past_the_table():
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 7, 30, 31, 45, 100, 10_000):
        assert stats.t_quantile_975(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), abs=1e-7)


def test_mcnemar_exact_p_value_is_the_two_sided_binomial():
    baseline = [True] * 10 + [True] + [False] * 7 + [False] * 5
    arm = [True] * 10 + [False] + [True] * 7 + [False] * 5
    result = stats.mcnemar_exact(baseline, arm)
    assert (result.only_baseline, result.only_arm, result.items) == (1, 7, 23)
    assert result.p_value == pytest.approx(2 * (math.comb(8, 0) + math.comb(8, 1)) / 2**8)  # 0.0703125
    assert stats.mcnemar_exact([True, False], [True, False]).p_value == 1.0  # no discordant items
    assert stats.binomial_two_sided(5, 10) == 1.0


def test_paired_bootstrap_covers_the_true_difference_with_its_sign():
    rng = np.random.default_rng(1)
    difficulty = rng.uniform(0, 1, 400)  # a large between-item spread, which pairing removes
    baseline = difficulty + rng.normal(0, 0.05, 400)
    arm = difficulty + 0.1 + rng.normal(0, 0.05, 400)
    up = stats.paired_bootstrap(baseline, arm, resamples=2000, seed=0)
    assert up.ci_low < 0.1 < up.ci_high and up.ci_low > 0 and up.p_value < 0.01 and up.items == 400
    down = stats.paired_bootstrap(arm, baseline, resamples=2000, seed=0)
    assert down.difference == pytest.approx(-up.difference) and down.ci_high < 0
    same = stats.paired_bootstrap(baseline, baseline + rng.normal(0, 0.05, 400), resamples=2000, seed=0)
    assert same.ci_low < 0 < same.ci_high and same.p_value > 0.05
    assert stats.paired_bootstrap(baseline, arm, resamples=500, seed=3) == stats.paired_bootstrap(
        baseline, arm, resamples=500, seed=3)  # seeded: the page is reproducible


def test_paired_row_pools_seeds_per_item(tmp_path):
    # Baseline seeds pass q0 twice of three times (majority: passed) and q1 once (failed); the arm passes both.
    make_run(tmp_path / "a0", beta=0.0, seed=0, items={"q0": 1.0, "q1": 1.0, "q2": 0.0})
    make_run(tmp_path / "a1", beta=0.0, seed=1, items={"q0": 1.0, "q1": 0.0})
    make_run(tmp_path / "a2", beta=0.0, seed=2, items={"q0": 0.0, "q1": 0.0})
    make_run(tmp_path / "b0", beta=0.1, seed=0, items={"q0": 1.0, "q1": 1.0, "q9": 1.0})
    baseline, arm = runs.load_arms([tmp_path])
    row = table.paired_row(baseline, arm, "final", resamples=200, seed=0)
    assert row["items"] == 2  # q2 and q9 are not scored by every run of both arms
    assert row["reward"]["baseline"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert row["pass@1"]["only_arm"] == 1 and row["pass@1"]["only_baseline"] == 0
    assert "only 2 shared items" in row["note"]  # a bootstrap of two items is no evidence: said on the page


def test_results_csv_and_json_hold_the_table_and_the_tests(tmp_path):
    written = build_comparison([two_arms(tmp_path / "sweep")], tmp_path / "out", resamples=2000)
    doc = json.loads(written["results.json"].read_text())
    assert doc["baseline"] == "loss.beta=0.0" and doc["metrics"] == ["pass@1", "reward/mean"]  # eval_seconds dropped
    first = doc["arms"][0]["metrics"]["pass@1"]
    assert first["mean"] == pytest.approx(0.5)
    assert first["ci95"] == pytest.approx(4.302652730 * 0.05 / math.sqrt(3))
    test = doc["paired"][0]
    assert test["items"] == 40 and test["pass@1"]["difference"] == pytest.approx(8 / 40)
    assert test["pass@1"]["only_arm"] == 8 and test["pass@1"]["mcnemar_p"] == pytest.approx(2 / 2**8)
    assert test["pass@1"]["ci_low"] > 0
    rows = list(csv.DictReader(written["results.csv"].open()))
    assert [r["arm"] for r in rows] == ["loss.beta=0.0", "loss.beta=0.04"]
    assert [r["n_seeds"] for r in rows] == ["3", "2"] and rows[0]["seeds"] == "0 1 2"
    assert float(rows[1]["pass@1 mean"]) == pytest.approx(0.71)
    assert float(rows[1]["pass@1 ci95"]) == pytest.approx(12.706204736 * math.sqrt(2e-4) / math.sqrt(2))
    assert rows[0]["pass@1 mcnemar_p"] == "" and float(rows[1]["pass@1 mcnemar_p"]) == pytest.approx(2 / 2**8)
    assert rows[1]["items compared"] == "40"


def test_page_has_the_curves_and_the_tables_and_is_self_contained(tmp_path):
    page = build_comparison([two_arms(tmp_path / "sweep")], tmp_path / "out", resamples=500)["compare.html"].read_text()
    for curve in ("reward", "validation", "entropy", "length", "kl"):
        assert f"id='curve-{curve}'" in page
    assert page.count("src='data:image/png;base64,") == 5
    assert "50.0% <span class='ci'>± " in page and "+20.0 pp" in page  # a results cell and a paired difference
    assert "Paired tests vs loss.beta=0.0" in page and "exact McNemar" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_no_shared_items_and_a_missing_curve_are_notes_not_errors(tmp_path):
    make_run(tmp_path / "a", beta=0.0, seed=0, items={"q0": 1.0})
    make_run(tmp_path / "b", beta=0.1, seed=0, items={"q1": 1.0})
    lines = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    (tmp_path / "b" / "metrics.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != names.REF_KL})
                                                          + "\n" for r in lines))
    written = build_comparison([tmp_path / "a", tmp_path / "b"], tmp_path / "out", resamples=100)
    doc = json.loads(written["results.json"].read_text())
    assert doc["paired"][0]["items"] == 0
    page = written["compare.html"].read_text()
    assert "no held-out example id appears in both loss.beta=0.0 and loss.beta=0.1" in page
    assert "actor/ref_kl is missing from b" in page
    assert "(n = 1, no CI)" in page and doc["arms"][0]["metrics"]["pass@1"]["ci95"] is None  # one seed each


def test_cli_end_to_end_and_its_errors(tmp_path, capsys):
    sweep = two_arms(tmp_path / "sweep")
    assert compare_cli.main([str(sweep), "--baseline", "0.04", "--metric", "pass@1", "--resamples", "300"]) == 0
    out = capsys.readouterr().out.split()
    assert out == [str(sweep / "compare" / f) for f in ("compare.html", "results.csv", "results.json")]
    doc = json.loads((sweep / "compare" / "results.json").read_text())
    assert doc["baseline"] == "loss.beta=0.04" and doc["metrics"] == ["pass@1"]
    assert doc["paired"][0]["pass@1"]["difference"] == pytest.approx(-8 / 40)
    assert sum(len(a.runs) for a in runs.load_arms([sweep])) == 5  # SWEEP/compare/results.json is no run

    (tmp_path / "empty").mkdir()
    assert compare_cli.main([str(tmp_path / "empty")]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    assert compare_cli.main([str(sweep / "b0-s0"), str(sweep / "b4-s0"), "--metric", "pass@8"]) == 2
    assert "'pass@8' is missing from 2 of 2 runs (b0-s0, b4-s0)" in capsys.readouterr().err
    assert compare_cli.main([str(sweep), "--baseline", "nope"]) == 2
    assert "matches no arm" in capsys.readouterr().err
