"""``rtp experiment report`` on synthetic logs: the keys of report.json, the lift it
finds, the sample-ratio check, and the files it writes."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import pytest

from beam_pipelines.experiments.config import ExperimentsConfig
from beam_pipelines.experiments.report import build_report, markdown, write_report
from beam_pipelines.rewards import SHORT_VIDEO
from rtp.cli import main
from rtp.simulator.experiment_log import experiment, synthetic_log

METRIC_KEYS = {"value", "ci_low", "ci_high", "lift"}


def test_report_finds_a_real_lift_and_has_the_keys() -> None:
    config = experiment("ab")
    events = synthetic_log(config, 3000, seed=5, lifts={"treatment": 0.3})

    report = build_report(events, SHORT_VIDEO, ExperimentsConfig(experiments=(config,)))

    ab = report["experiments"]["ab"]
    assert ab["control"] == "control" and ab["srm_p_value"] > 0.001
    treatment = ab["variants"]["treatment"]
    for name in ("control", "treatment"):
        row = ab["variants"][name]
        assert {"users", "exposures", "engagement_rate", "reward_per_exposure"} <= set(row)
        assert set(row["engagement_rate"]) >= METRIC_KEYS and "srm_p_value" in row
        assert row["daily"] and row["daily"][0]["day"] == "2023-11-14"
    assert ab["variants"]["control"]["engagement_rate"]["lift"] is None
    change = treatment["engagement_rate"]["lift"]
    assert change["significant"] and change["ci_low"] < 0.3 < change["ci_high"]
    assert report["events"]["attributed"] == report["events"]["outcomes"]


def test_srm_flags_a_broken_60_40_assignment() -> None:
    config = experiment("broken")
    events = synthetic_log(
        config, 10_000, seed=6, actual_shares={"control": 0.6, "treatment": 0.4}, k=1
    )

    report = build_report(events, SHORT_VIDEO, ExperimentsConfig(experiments=(config,)))

    assert report["experiments"]["broken"]["srm_p_value"] < 1e-6


def test_cli_writes_json_markdown_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = experiment("ab")
    log = tmp_path / "events.jsonl"
    events = synthetic_log(config, 300, seed=1, lifts={"treatment": 0.5})
    log.write_bytes(b"".join(e.to_json() + b"\n" for e in events))
    (tmp_path / "experiments.yaml").write_text(
        "experiments:\n  - name: ab\n    salt: ab-salt\n"
        "    variants: [{name: control}, {name: treatment}]\n"
    )
    out = tmp_path / "report"

    code = main(
        [
            "experiment",
            "report",
            f"--events={log}",
            f"--out={out}",
            f"--experiments={tmp_path / 'experiments.yaml'}",
        ]
    )

    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["events"]["read"] == len(events)
    assert report["experiments"]["ab"]["configured"] is True
    assert "| treatment |" in (out / "report.md").read_text()
    for png in ("metrics_over_time.png", "lift.png"):
        assert matplotlib.image.imread(out / png).shape[0] > 100
    printed = capsys.readouterr().out
    assert "ab: SRM p=" in printed and "report.json" in printed


def test_a_log_without_experiments_says_so(tmp_path: Path) -> None:
    report = build_report(synthetic_log(experiment(), 5, seed=1)[:0], SHORT_VIDEO)
    assert report["experiments"] == {}
    assert "carries an experiment" in markdown(report)
    write_report(report, tmp_path)  # the plots still open
    assert matplotlib.image.imread(tmp_path / "lift.png").shape[0] > 50


def test_cli_names_a_missing_log(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert (
        main(["experiment", "report", f"--events={tmp_path}/none.jsonl", f"--out={tmp_path}"]) == 2
    )
    assert "none.jsonl" in capsys.readouterr().err


def test_metrics_job_writes_the_report_numbers_as_parquet(tmp_path: Path) -> None:
    """``rtp experiment metrics``: the Beam job over a log with a redelivered event
    and an invalid line writes the report's per-variant numbers."""
    import pyarrow.parquet as pq

    config = experiment("ab")
    events = synthetic_log(config, 80, seed=2, lifts={"treatment": 0.5})
    log = tmp_path / "events.jsonl"
    lines = [e.to_json() for e in events]
    log.write_bytes(b"\n".join([*lines, lines[0], b'{"not": "an event"}']) + b"\n")

    assert main(["experiment", "metrics", f"--events={log}", f"--out={tmp_path / 'm'}"]) == 0

    (path,) = (tmp_path / "m").glob("experiment_metrics*.parquet")
    rows = {(r["variant"], r["day"]): r for r in pq.read_table(path).to_pylist()}
    report = build_report(events, SHORT_VIDEO)["experiments"]["ab"]["variants"]
    for variant, expected in report.items():
        whole = rows[(variant, "")]
        assert (whole["users"], whole["exposures"]) == (expected["users"], expected["exposures"])
        assert whole["engagement_rate"] == pytest.approx(expected["engagement_rate"]["value"])
        assert whole["reward_per_exposure_ci_low"] == pytest.approx(
            expected["reward_per_exposure"]["ci_low"]
        )
        assert len([key for key in rows if key[0] == variant]) == len(expected["daily"]) + 1
    summary = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert summary["invalid"] == 1 and summary["valid"] == len(events) + 1
