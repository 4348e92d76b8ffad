"""``--format`` from the ``--events`` extension for backfill, train and evaluate; an
explicit ``--format`` wins, and a log whose format cannot be told is exit 2."""

from __future__ import annotations

import pytest

from beam_pipelines import backfill
from beam_pipelines.event_logs import infer_format
from models import train_args
from models.evaluation import cli as evaluate_cli


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        ("ratings.csv", "movielens"),
        ("data/RATINGS.CSV", "movielens"),
        ("events.jsonl", "jsonl"),
        ("events.json", "jsonl"),
        ("gs://bucket/logs/*.parquet", "parquet"),
        ("logs/part-*", None),
        ("events.txt", None),
    ],
)
def test_infer_format_from_the_extension(path: str, fmt: str | None) -> None:
    assert infer_format(path) == fmt


@pytest.mark.parametrize("parser", [backfill.parser, train_args.parser])
@pytest.mark.parametrize(
    ("events", "flags", "fmt"),
    [
        ("ratings.csv", [], "movielens"),
        ("events.jsonl", [], "jsonl"),
        ("events.parquet", [], "parquet"),
        ("ratings.csv", ["--format", "jsonl"], "jsonl"),  # explicit wins
        ("logs/part-*", [], "jsonl"),  # no known extension: the former default
    ],
)
def test_backfill_and_train_infer_the_format(parser, events, flags, fmt) -> None:
    args = parser().parse_args(["--events", events, "--out", "out", *flags])
    assert args.format == fmt


def test_evaluate_infers_the_format_it_reads() -> None:
    args = evaluate_cli.parser().parse_args(["--events", "ratings.csv", "--out", "o"])
    assert args.fmt == "movielens"
    args = evaluate_cli.parser().parse_args(["--events", "sim.jsonl", "--out", "o"])
    assert args.fmt == "jsonl"


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ("events.parquet", "events.parquet looks like parquet, not one of movielens, jsonl"),
        ("events.txt", "cannot tell the format of events.txt: give --format"),
    ],
)
def test_evaluate_without_a_format_it_can_tell_is_a_usage_error(
    events: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        evaluate_cli.parser().parse_args(["--events", events, "--out", "o"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: rtp evaluate ") and message in err


def test_backfill_reads_a_movielens_csv_without_format(tmp_path) -> None:
    """The issue's case: ratings.csv without --format was read as JSON lines
    (every record a 'malformed_json' dead letter)."""
    ratings = tmp_path / "ratings.csv"
    rows = [f"{u},{i},4.0,{1_000_000_000 + 60 * (u * 10 + i)}" for u in (1, 2) for i in (1, 2, 3)]
    ratings.write_text("userId,movieId,rating,timestamp\n" + "\n".join(rows) + "\n")
    summary = backfill.run_backfill(["--events", str(ratings), "--out", str(tmp_path / "out")])
    assert summary["format"] == "movielens"
    assert (summary["read"], summary["valid"], summary["dead_lettered"]) == (6, 6, 0)
