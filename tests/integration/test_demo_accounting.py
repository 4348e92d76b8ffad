"""The demo's streaming feed under the delivery order that used to crash it.

The Pub/Sub emulator may deliver an injected late event before its user's newer
events; the per-user lateness rule then applies it. The old check (every
labelled-late event dead-lettered) failed such runs with "applied more than
sent". Here the late events are fed first, as a part of their own, so that each
reaches the job before any newer event of its user: the job applies them all,
and after the rest of the stream the feed's accounting (every message applied
once or dead-lettered once, never both, never neither) holds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beam_pipelines.accounting import letters_in
from rtp.demo.streaming_feed import StreamingFeed
from rtp.simulator.config import SimulatorConfig
from rtp.simulator.simulation import simulate
from tests.helpers.components import component

pytestmark = pytest.mark.timeout(1200)


def test_late_events_delivered_first_are_applied_and_accounted_for(tmp_path: Path) -> None:
    config = SimulatorConfig(n_events=3000, n_users=60, n_items=800, seed=7, dirty_fraction=0.05)
    records = list(simulate(config))
    late = [r for r in records if r.kind == "late"]
    assert late, "the simulator injected no late event"
    rest = [r for r in records if r.kind != "late"]
    features = tmp_path / "features"
    with component(), StreamingFeed(features, None, timeout_s=600) as feed:
        first = feed.feed(late, tmp_path / "unused.jsonl")
        second = feed.feed(rest, tmp_path / "unused.jsonl")
    print(first, second, sep="\n")
    assert first["applied"] == len(late) and not first["dead_lettered_by_reason"]
    late_ids = {json.loads(r.data)["event_id"] for r in late}
    letters = letters_in(sorted((features / "dead_letters").glob("*.jsonl")))
    assert letters is not None and not late_ids & {x.event_id for x in letters}
    accounting = json.loads((features / "accounting.json").read_text())
    assert accounting["published"] == len(records)
    assert accounting["unaccounted"] == accounting["counted_twice"] == 0
    redelivered = accounting["redelivered_by_the_bus"]
    assert accounting["applied"] + accounting["dead_lettered"] - redelivered == len(records)
    assert second["accounting"].startswith(f"published {len(records)} = applied ")
