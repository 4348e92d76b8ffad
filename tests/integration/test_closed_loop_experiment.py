"""A short closed loop of ``rtp demo --experiment``, without the training run (a
tiny untrained export of the simulator's catalogue): the history goes through the
backfill job into SQLite, then the streaming job on the Pub/Sub emulator, the
service over HTTP with the streamed/frozen experiment and the simulator's users
run the loop. Checked: the accounting (every item shown is an exposure the service
published and the topic's log holds once; every event the users sent is logged)
and the report (both variants, an SRM p-value). No wall-clock assertion.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rtp.demo import experiment
from rtp.demo.run import BackfillFeed
from rtp.demo.streaming_feed import StreamingFeed
from rtp.simulator.config import SimulatorConfig
from rtp.simulator.simulation import simulate
from rtp.tfserving_standin.tiny_export import export_tiny
from tests.helpers.components import component

pytestmark = pytest.mark.timeout(900)
LOOP_EVENTS = 400


def test_closed_loop_logs_every_exposure_and_reports_both_variants(tmp_path: Path) -> None:
    start_ms = (int(time.time()) // 3600 - 24) * 3_600_000  # recent: users are not stale
    config = SimulatorConfig(
        n_events=1500, n_users=40, n_items=300, n_topics=8, seed=5, start_ms=start_ms
    )
    sim = simulate(config)
    records = list(sim)
    history = tmp_path / "events.jsonl"
    history.write_bytes(b"".join(r.data + b"\n" for r in records))
    base = tmp_path / "models"
    export_tiny(base, sim.catalogue.item_ids, version=1)
    features, out = tmp_path / "features", tmp_path / "experiment"
    with BackfillFeed(features, str(base)) as backfill:
        backfill.feed(records, history)
    with component(), StreamingFeed(features, str(base), timeout_s=300) as feed:
        document = experiment.closed_loop(sim, base, feed, out, LOOP_EVENTS, rate=None)
    loop, accounting = document["loop"], document["accounting"]
    print(json.dumps(document, indent=1))
    assert loop["stopped"] is None
    assert loop["events_published"] >= LOOP_EVENTS
    assert accounting["holds"], accounting
    assert accounting["exposures_dropped"] == accounting["exposures_failed"] == 0
    assert accounting["shown"] == accounting["exposures_logged"] == loop["sessions"] * 10

    report = experiment.report(out)
    found = report["experiments"][experiment.EXPERIMENT]
    assert set(found["variants"]) == {experiment.CONTROL, experiment.TREATMENT}
    assert found["srm_p_value"] is not None and 0.0 <= found["srm_p_value"] <= 1.0
    assert sum(v["exposures"] for v in found["variants"].values()) == accounting["shown"]
    assert sum(v["users"] for v in found["variants"].values()) == len(
        {line["user_id"] for line in map(json.loads, (out / "events.jsonl").open())}
    )
    assert report["events"]["no_exposure"] == 0  # every reaction follows its exposure
    assert (out / "report.md").exists() and (out / "lift.png").exists()
