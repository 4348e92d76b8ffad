"""``rtp evaluate`` end to end on a tiny MovieLens file and a tiny simulator stream
(non-neural variants: no TensorFlow here, a few seconds)."""

from __future__ import annotations

import json
import math

import pytest

from rtp.jobs.evaluate import main
from rtp.simulator.config import SimulatorConfig
from rtp.simulator.simulation import simulate
from rtp.simulator.writer import StreamWriter

BASELINES = "popularity,popularity_rolling,itemknn_recent"
ROWS = [  # the log of tests/unit/test_evaluation_protocol.py
    (3, 3, 4.0, 6), (1, 1, 4.0, 1), (2, 1, 5.0, 2), (3, 1, 3.0, 3), (2, 2, 4.0, 4),
    (3, 2, 2.0, 5), (1, 4, 4.0, 7), (10, 4, 4.0, 8), (2, 4, 1.0, 8), (1, 3, 4.0, 9),
    (11, 2, 4.0, 10),
]  # fmt: skip


def test_movielens_run_writes_metrics_report_and_plots(tmp_path):
    events = tmp_path / "ratings.csv"
    events.write_text(
        "user,item,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in ROWS)
    )
    out = tmp_path / "out"
    argv = ["--events", str(events), "--format", "movielens", "--out", str(out), "--k", "2,3"]
    assert main([*argv, "--variants", BASELINES, "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    pop = metrics["variants"]["popularity"]
    assert pop["all"]["n_events"] == 3 and pop["warm"]["n_events"] == 1
    assert pop["all"]["ndcg@3"] == pytest.approx((0.5 + 1 / math.log2(3) + 0.5) / 3)
    assert metrics["variants"]["popularity_rolling"]["all"]["hr@3"] == pytest.approx(2 / 3)
    assert metrics["dataset"]["n_cold_test_users"] == 2
    assert metrics["wall_time_s"]["total"] > 0
    report = (out / "report.md").read_text()
    assert "| itemknn_recent |" in report
    for png in ("metrics_by_variant.png", "ndcg10_rolling.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_simulator_run_measures_time_to_adapt(tmp_path):
    config = SimulatorConfig(n_events=3000, n_users=30, n_items=200, shift_probability=0.5, seed=3)
    path = tmp_path / "sim.jsonl"
    sim = simulate(config)
    with StreamWriter(path) as writer:
        for record in sim:
            writer.write(record)
        writer.finish(sim)
    out = tmp_path / "out"
    argv = ["--events", str(path), "--format", "jsonl", "--out", str(out)]
    assert main([*argv, "--variants", BASELINES, "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"]["n_targets"] > 0
    adapt = metrics["time_to_adapt"]
    assert adapt["n_shifts"] > 0
    assert set(adapt["itemknn_recent"]) == {"any", "plurality"}
    assert "Time to adapt" in (out / "report.md").read_text()


def test_missing_file_is_a_usage_error(tmp_path, capsys):
    assert (
        main(
            [
                "--events",
                str(tmp_path / "nope.csv"),
                "--format",
                "movielens",
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "not a file" in capsys.readouterr().err


def test_every_variant_trains_on_the_training_period_only(tmp_path):
    """Wiring of the model-based variants through ``rtp train`` (1 epoch, tiny stream)."""
    path = tmp_path / "sim.jsonl"
    sim = simulate(SimulatorConfig(n_events=4000, n_users=40, n_items=150, seed=5))
    with StreamWriter(path) as writer:
        for record in sim:
            writer.write(record)
        writer.finish(sim)
    out = tmp_path / "out"
    argv = ["--events", str(path), "--format", "jsonl", "--out", str(out), "--epochs", "1"]
    assert main([*argv, "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["variants"]) == [
        "popularity", "popularity_rolling", "itemknn_recent", "coengagement_rolling",
        "sequential_static", "sequential_streaming", "full", "full_ranker",
        "two_tower_static", "two_tower_streaming", "two_tower_full",
    ]  # fmt: skip
    n_targets = metrics["dataset"]["n_targets"]
    assert all(v["all"]["n_events"] == n_targets for v in metrics["variants"].values())
    trained = json.loads((out / "work" / "models" / "metrics.json").read_text())
    assert trained["events"] == metrics["dataset"]["n_train_events"]  # nothing from the test
