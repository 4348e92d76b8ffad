"""``rtp demo`` end to end on a small seeded stream: simulate, split where a few
users' interests shift, train on part 1, feed part 1 (streaming job through the
Pub/Sub emulator, or the backfill job), ask the service, feed part 2 without
retraining, ask again. The measured claim: summed over the shown users, the share
of their new topic in the top-k rises (a tiny model does not move every user).

Slow (a training run and the pipeline twice per test); kept small.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rtp.demo import run as demo
from tests.helpers.components import fail_or_skip

pytestmark = pytest.mark.timeout(1200)
SMALL = [
    "--events=6000",
    "--users=60",
    "--items=800",
    "--topics=8",
    "--seed=7",
    "--shift-probability=0.2",
]


def run_demo(out: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[str, dict]:
    assert demo.main([f"--out={out}", *SMALL, *flags]) == 0
    printed = capsys.readouterr().out
    return printed, json.loads((out / "recommendations.json").read_text())


def check_before_after(printed: str, document: dict[str, Any]) -> None:
    users = document["users"]
    assert len(users) == demo.SHOWN_USERS
    assert "Recommendations (" in printed
    assert f"Share of the top-{demo.K} in each user's new topic" in printed
    for user in users:
        before, after = user["before"], user["after"]
        for shown in (before, after):
            assert shown["fallback"] is None and shown["model_version"] is not None
            assert len(shown["items"]) == demo.K
        assert before["model_version"] == after["model_version"]  # no retraining
        assert after["user_event_count"] > before["user_event_count"]  # part 2 arrived
        assert user["old_topic"] != user["new_topic"]
        line = (
            f"  {user['user_id']}  {user['new_topic']:<10} {before['new_topic_share']:.2f} → "
            f"{after['new_topic_share']:.2f}"
        )
        assert line in printed
    before_sum = sum(u["before"]["new_topic_share"] for u in users)
    after_sum = sum(u["after"]["new_topic_share"] for u in users)
    assert after_sum > before_sum, (before_sum, after_sum)


def test_demo_with_the_backfill_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    printed, document = run_demo(tmp_path, capsys, "--no-stream")
    assert "backfill job (Beam FnApiRunner)" in printed
    check_before_after(printed, document)


def test_demo_with_the_streaming_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    printed, document = run_demo(tmp_path, capsys)
    if "no Pub/Sub emulator" in printed:
        message = next(line for line in printed.splitlines() if "no Pub/Sub emulator" in line)
        fail_or_skip(message.strip())
    assert "streaming job (DirectRunner)" in printed
    assert printed.count("waiting for the store to catch up") == 2  # one job, two parts
    check_before_after(printed, document)
