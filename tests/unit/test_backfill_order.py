"""The backfill replays a bounded log in event-time order by default.

The crafted log of issue 14: 2,000 valid events whose times spread over 33
minutes, the lines shuffled, plus 100 redeliveries (same event_id, lines
anywhere) and 14 malformed lines. A bounded log has no late data (Beam's batch
semantics): with the default command line every valid event is applied once,
every redelivery is a ``duplicate`` and every malformed line a dead letter with
its reason. ``--order arrival`` still reproduces what a stream receiving the
lines in file order would decide (here: many ``late``).
"""

from __future__ import annotations

import collections
import random
from pathlib import Path

import pytest

from beam_pipelines.backfill import run_backfill
from beam_pipelines.transforms.dead_letters import DeadLetter
from tests.helpers.events import SECOND_MS, T0_MS, event_json

N_VALID, N_REDELIVERED = 2_000, 100
SPREAD_MS = 33 * 60 * SECOND_MS
TYPES = ("impression", "like", "skip", "share")
MALFORMED = {  # 14 lines, 11 reasons
    b'{"event_id": "m1", "user_id": ': "malformed_json",
    b"not json at all": "malformed_json",
    b"[1, 2, 3]": "not_object",
    b'"a string"': "not_object",
    event_json("m5", user_id="").replace(b'"user_id":"",', b""): "missing_field",
    event_json("m6", user_id=""): "empty_field",
    event_json("m7", item_id=""): "empty_field",
    event_json("m8", item_id="x" * 129): "field_too_long",
    event_json("m9", user_id="u\x01"): "control_characters",
    event_json("m10", event_type="teleport"): "unknown_event_type",
    event_json("m11", t_ms=T0_MS).replace(str(T0_MS).encode(), b'"yesterday"'): "bad_timestamp",
    event_json("m12", t_ms=631_152_000_000): "timestamp_out_of_range",
    event_json("m13", event_type="view", watch_ms=-5, item_duration_ms=1000): "negative_watch_ms",
    b"\xff\xfe" + event_json("m14"): "not_utf8",
}


def crafted_log(path: Path, seed: int = 14) -> None:
    rng = random.Random(seed)
    valid = [
        event_json(
            f"c{i:05d}",
            user_id=f"u{rng.randrange(40):03d}",
            item_id=f"i{rng.randrange(300):04d}",
            event_type=rng.choice(TYPES),
            t_ms=T0_MS + rng.randrange(SPREAD_MS),
        )
        for i in range(N_VALID)
    ]
    lines = valid + rng.sample(valid, N_REDELIVERED) + list(MALFORMED)
    rng.shuffle(lines)
    path.write_bytes(b"".join(line + b"\n" for line in lines))


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("crafted") / "log.jsonl"
    crafted_log(path)
    return path


def _letters(out: Path) -> list[DeadLetter]:
    return [
        DeadLetter.from_json(line)
        for path in sorted((out / "dead_letters").glob("*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]


def test_the_default_command_line_applies_every_valid_event_once(log, tmp_path):
    assert len(MALFORMED) == 14
    summary = run_backfill(["--events", str(log), "--out", str(tmp_path)])
    assert summary["order"] == "time"
    assert summary["read"] == N_VALID + N_REDELIVERED + len(MALFORMED)
    assert summary["applied"] == N_VALID
    assert summary["duplicates"] == N_REDELIVERED and summary["late"] == 0
    reasons = collections.Counter(MALFORMED.values())
    assert summary["dead_lettered_by_reason"] == {**reasons, "duplicate": N_REDELIVERED}
    letters = _letters(tmp_path)
    invalid = {letter.payload: letter.reason for letter in letters if letter.event_id is None}
    assert invalid == MALFORMED  # each malformed line once, with its reason
    duplicated = [letter.event_id for letter in letters if letter.reason == "duplicate"]
    assert len(duplicated) == N_REDELIVERED


def test_arrival_order_reproduces_a_stream_that_received_the_file_order(log, tmp_path):
    summary = run_backfill(["--events", str(log), "--out", str(tmp_path), "--order", "arrival"])
    assert summary["order"] == "arrival"
    assert summary["late"] > 0  # shuffled over 33 minutes, 10 minutes of allowed lateness
    letters = sum(summary["dead_lettered_by_reason"].values())
    assert summary["applied"] + letters == summary["read"]  # each line once, either way
    assert summary["applied"] < N_VALID
