"""The backfill on Beam's DaskRunner, on a real ``dask.distributed`` LocalCluster
of two worker processes, writes what the local runner writes on the same log:
the same history rows, summary counts and dead letters."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from beam_pipelines import backfill
from beam_pipelines.transforms.dead_letters import DeadLetter
from feature_repo.features import ITEM_REALTIME, USER_REALTIME
from rtp.simulator.config import DirtyKind, SimulatorConfig
from rtp.simulator.simulation import simulate
from tests.helpers.components import require_import

pytestmark = pytest.mark.timeout(300)

SIM = SimulatorConfig(
    n_events=3000,
    n_users=60,
    n_items=150,
    seed=7,
    dirty_fraction=0.05,
    dirty_kinds=(
        DirtyKind.DUPLICATE,
        DirtyKind.LATE,
        DirtyKind.MALFORMED_JSON,
        DirtyKind.BAD_TIMESTAMP,
    ),
)


def _rows(out, view):
    rows = pq.read_table(out / "offline" / view).to_pylist()
    return sorted(rows, key=repr)


def _letters(out):
    letters = [
        DeadLetter.from_json(line)._replace(failed_at_ms=None)
        for path in (out / "dead_letters").glob("*.jsonl")
        for line in path.read_bytes().splitlines()
    ]
    return sorted(letters, key=repr)


def _counts(out):
    summary = json.loads((out / "summary.json").read_text())
    return {k: v for k, v in summary.items() if k not in ("wall_s", "events_per_s")}


def test_dask_backfill_matches_the_local_runner(tmp_path):
    require_import("distributed", "pip install '.[dask]'")
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"".join(r.data + b"\n" for r in simulate(SIM)))
    common = ["--events", str(log), "--events_per_shard", "700"]  # 5 shards
    local, dask = tmp_path / "local", tmp_path / "dask"
    backfill.run_backfill([*common, "--out", str(local)])
    backfill.run_backfill(
        [*common, "--out", str(dask), "--runner", "DaskRunner", "--dask_workers", "2"]
    )

    assert len(list((dask / "offline" / USER_REALTIME).glob("*.parquet"))) > 1
    for view in (USER_REALTIME, ITEM_REALTIME):
        assert _rows(local, view) == _rows(dask, view), view
    assert _letters(local) == _letters(dask)
    counts = _counts(local)
    assert counts["dead_lettered"] > 0 and counts["applied"] > 0
    assert counts == _counts(dask)
