"""The backfill picks each event's item-embedding table by event time, as the live
job did when the versions appeared one after another: a replay over a log that
spans several model versions must tag each history row with the version active
at that time, never with the hashed fallback."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from beam_pipelines.backfill import run_backfill
from feature_repo.features import USER_REALTIME
from tests.helpers.embeddings import random_vectors, write_table
from tests.helpers.events import MINUTE_MS, T0_MS, event_json


# More versions than EmbeddingSource.KEEP: the oldest are evicted and reloaded when
# an event time needs them.
@pytest.mark.parametrize("versions", [3, 5])
def test_history_rows_carry_the_version_active_at_their_event_time(versions, tmp_path):
    model_base = tmp_path / "models"
    items = ["i1", "i2"]
    for v in range(1, versions + 1):
        # Version 1 applies from the start; version v from (v - 1) * 10 minutes on.
        active_from = None if v == 1 else T0_MS + (v - 1) * 10 * MINUTE_MS
        write_table(model_base, v, random_vectors(items, 4, seed=v), active_from_ms=active_from)
    times = [T0_MS + (10 * k + 5) * MINUTE_MS for k in range(versions)]
    log = tmp_path / "events.jsonl"
    log.write_bytes(
        b"".join(
            event_json(f"e{k}", "u1", items[k % 2], "like", t) + b"\n" for k, t in enumerate(times)
        )
    )
    out = tmp_path / "out"
    summary = run_backfill(
        ["--events", str(log), "--out", str(out), "--model_base", str(model_base)]
    )
    assert summary["applied"] == versions
    history = sorted(
        pq.read_table(out / "offline" / USER_REALTIME).to_pylist(),
        key=lambda row: row["user_event_count"],
    )
    got = [row["user_embedding_version"] for row in history]
    assert got == [str(v) for v in range(1, versions + 1)]
